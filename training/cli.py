"""``lisentry train | tune | evaluate`` (registered on the umbrella app in detector/cli.py)."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, List, Optional

import typer


def dataset_nucleus(ds) -> str | None:
    """The one nucleus of a dataset's frames (manifest's processing config when the frame table
    has none); None when unknown.

    Raises
    ------
    InputError
        If the dataset mixes nuclei.
    """
    from lisentry.datasets.errors import InputError
    nuclei: list[str] = []
    if "nucleus" in ds.frames.columns:
        nuclei = sorted({str(n) for n in ds.frames["nucleus"].dropna() if str(n)})
    if not nuclei:
        n = (ds.manifest.get("processing") or {}).get("nucleus")
        nuclei = [str(n)] if n else []
    if len(nuclei) > 1:
        raise InputError(ds.path, f"frames of several nuclei ({', '.join(nuclei)}); a model is "
                                  "for one")
    return nuclei[0] if nuclei else None


def register(app: typer.Typer, friendly_errors) -> None:
    @app.command()
    @friendly_errors
    def train(config: Annotated[Path, typer.Argument(help="Training config YAML.")],
              set_: Annotated[Optional[List[str]], typer.Option("--set", help="Override, e.g. train.epochs=5 (repeatable).")] = None,
              init_from: Annotated[Optional[str], typer.Option("--init-from", help="Bundle (folder or models:/NAME@ALIAS) to fine-tune.")] = None,
              out: Annotated[Optional[Path], typer.Option("--out", help="Bundle folder to write (default: the config's out).")] = None,
              tracking_uri: Annotated[Optional[str], typer.Option("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db).")] = None,
              no_mlflow: Annotated[bool, typer.Option("--no-mlflow", help="Do not log to MLflow.")] = False):
        """Train a detector model and write a bundle (safetensors + JSON card)."""
        from lisentry.training.config import load_train_config
        from lisentry.training.loop import train as run_train
        from lisentry.training.tracking import Tracker
        overrides = list(set_ or [])
        if init_from:
            overrides.append(f"init_from={init_from}")
        if out:
            overrides.append(f"out={out}")
        cfg = load_train_config(config, overrides)
        ml = cfg["mlflow"]
        tracker = Tracker(enabled=ml["enabled"] and not no_mlflow, experiment=ml["experiment"],
                          tracking_uri=tracking_uri or ml["tracking_uri"])
        with tracker.run("train"):
            res = run_train(cfg, tracker=tracker)
        typer.echo(f"bundle: {res.bundle_dir}")
        typer.echo(f"validation macro-F1 {res.best_val_f1:.3f} after {res.epochs_run} epochs; "
                   f"temperature {res.metrics['temperature']:.2f}")

    @app.command()
    @friendly_errors
    def tune(config: Annotated[Path, typer.Argument(help="Training config YAML.")],
             trials: Annotated[int, typer.Option("--trials", help="Trials to run in this call.")] = 10,
             storage: Annotated[Optional[str], typer.Option("--storage", help="Optuna storage: a journal file (default <out>.tuning/study.journal) or a postgresql:// URL.")] = None,
             study_name: Annotated[str, typer.Option("--study", help="Study name (resumed if it exists).")] = "lisentry",
             set_: Annotated[Optional[List[str]], typer.Option("--set", help="Override (repeatable).")] = None):
        """Tune hyper-parameters with Optuna (resumable, prunes weak trials)."""
        from lisentry.training.tuning import tune as run_tune
        res = run_tune(config, trials, storage=storage, study_name=study_name,
                       overrides=list(set_ or []))
        for k, v in res.items():
            typer.echo(f"{k}: {v}")

    @app.command()
    @friendly_errors
    def export(model: Annotated[str, typer.Argument(help="Bundle folder or models:/NAME@ALIAS.")],
               out: Annotated[Path, typer.Option("--out", help="ONNX file to write.")],
               check: Annotated[bool, typer.Option("--check/--no-check", help="Compare with PyTorch in ONNX Runtime (needs onnxruntime).")] = True):
        """Export a bundle's streaming step to one self-contained ONNX file (card as metadata)."""
        from lisentry.models.bundle import load_bundle
        from lisentry.models.onnx_export import check_onnx, export_onnx
        bundle = load_bundle(model)
        try:
            path = export_onnx(bundle.model, out, card=bundle.card,
                               presence_gate=bundle.presence_gate)
        except ImportError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2)
        except Exception as exc:  # the exporter's own errors are many lines long
            first = (str(exc).strip().splitlines() or [""])[0]
            typer.echo(f"error: {model}: ONNX export failed ({type(exc).__name__}: {first})", err=True)
            raise typer.Exit(1)
        typer.echo(f"{path}: {path.stat().st_size / 1e3:.0f} kB, inputs spectrum, echem, "
                   "echem_mask and the state (lisentry.models.onnx_export)")
        if check:
            try:
                r = check_onnx(bundle.model, path, presence_gate=bundle.presence_gate)
            except ImportError as exc:
                typer.echo(f"not checked: {exc}", err=True)
                return
            typer.echo(f"checked on {r['frames']} streamed frames: largest logit difference "
                       f"{r['max_abs_logit_diff']:.1e}, aux {r['max_abs_aux_diff']:.1e}, same class on "
                       f"{r['argmax_agree']:.0%}; {r['onnx_ms_per_frame']:.2f} ms/frame in ONNX "
                       f"Runtime, {r['torch_ms_per_frame']:.2f} in PyTorch (1 thread)")
            if r["argmax_agree"] < 1.0 or r["max_abs_logit_diff"] > 1e-3 or r["max_abs_aux_diff"] > 1e-3:
                typer.echo("error: the exported model does not match the bundle", err=True)
                raise typer.Exit(1)

    @app.command()
    @friendly_errors
    def evaluate(model: Annotated[str, typer.Argument(help="Bundle folder or models:/NAME@ALIAS.")],
                 dataset: Annotated[Path, typer.Argument(help="Dataset folder.")],
                 split: Annotated[str, typer.Option(help="Which runs: all, or test/val/train/leave_out of the bundle's recorded split.")] = "all",
                 out: Annotated[Optional[Path], typer.Option("--out", help="Metrics JSON (default: evaluation.json).")] = None):
        """Frame and event metrics of a model on a dataset: table on stdout, JSON file."""
        from lisentry.datasets.store import Dataset
        from lisentry.detector.hysteresis import AlarmPolicy
        from lisentry.models.bundle import load_bundle
        from lisentry.training.data import load_runs
        from lisentry.training.evaluate import (evaluate_predictions, format_latents,
                                                format_table, latent_metrics, predict_runs,
                                                save_json)
        ds = Dataset(dataset)
        bundle = load_bundle(model, expect_grid=ds.ppm_grid, expect_nucleus=dataset_nucleus(ds),
                             expect_processing=ds.manifest.get("processing"))
        card = bundle.card
        det = card.get("detector") or {}
        policy = AlarmPolicy(enter=det.get("enter", 0.6), exit=det.get("exit", 0.4),
                             min_consecutive=det.get("min_consecutive", 2))
        if split == "all":
            ids = ds.run_ids
        else:
            ids = [r for r in (card.get("training_split") or {}).get(split, []) if r in set(ds.run_ids)]
            if not ids:
                typer.echo(f"error: no runs of split {split!r} of this model are in {dataset}", err=True)
                raise typer.Exit(2)
        runs = load_runs(ds, ids, window=bundle.window_inputs, symmetric_cells=bundle.symmetric_cells)
        preds = predict_runs(bundle.model, runs, temperature=float(card.get("temperature", 1.0)),
                             policy=policy)
        res = evaluate_predictions(runs, preds, float(det.get("horizon_s", 3600.0)))
        typer.echo(format_table(res))
        # simulated datasets: how good the latent amounts are, as the detector reports them
        lat = latent_metrics(bundle.model, runs, bundle.presence_gate)
        if lat is not None:
            res["latents"] = lat
            typer.echo(format_latents(lat))
        path = save_json({"model": str(model), "dataset": str(dataset), "split": split, **res},
                         out or Path("evaluation.json"))
        typer.echo(f"metrics written to {path}", err=True)
