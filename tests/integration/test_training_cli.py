"""End to end: build the smoke dataset, train a tiny model (tracked in MLflow, registered with an
alias), evaluate it by registry URI, tune two trials that resume from a journal."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]


def lisentry(*args, cwd, env=None, check=True):
    proc = subprocess.run([sys.executable, "-m", "lisentry.detector.cli", *map(str, args)],
                          cwd=cwd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    if check and proc.returncode != 0:
        pytest.fail(f"lisentry {' '.join(map(str, args))} exited {proc.returncode}:\n"
                    f"{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    d = tmp_path_factory.mktemp("train")
    cfg = d / "ds.yaml"
    cfg.write_text((REPO / "configs" / "dataset-smoke.yaml").read_text().replace("max_frames: 40", "max_frames: 24"))
    lisentry("datasets", "build", cfg, "--out", d / "smoke", "--workers", "1", cwd=d)
    return d


def test_dataset_show_reports_balance(smoke):
    out = lisentry("datasets", "show", smoke / "smoke", cwd=smoke).stdout
    assert "20 runs" in out and "hc_sulfide_lowpressure" in out and "imminent_short" in out


def test_train_track_register_evaluate(smoke):
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{smoke / 'mlflow.db'}"}
    lisentry("train", REPO / "configs" / "train-smoke.yaml", "--set", f"dataset={smoke / 'smoke'}",
             "--set", f"out={smoke / 'model'}", "--set", "mlflow.enabled=true",
             "--set", "mlflow.register_as=smoke-model", "--set", "detector.tune_policy=true",
             "--set", "train.weight_average_from=0.5", "--set", "train.augment.noise_prob=0.5",
             cwd=smoke, env=env)
    card = json.loads((smoke / "model" / "card.json").read_text())
    # the weight average was scored on validation and the better of it and the best epoch kept
    m = card["metrics"]
    assert m["val_macro_f1_weight_average"] is not None
    assert m["val_macro_f1"] == max(m["val_macro_f1_best_epoch"], m["val_macro_f1_weight_average"])
    # the alarm policy was chosen on the validation runs and is the one the bundle carries
    chosen = card["metrics"]["policy_search"]["chosen"]
    assert {k: card["detector"][k] for k in ("enter", "exit", "min_consecutive")} == {
        k: chosen[k] for k in ("enter", "exit", "min_consecutive")}
    assert len(card["metrics"]["policy_search"]["grid"]) > 10
    assert card["training_data_hash"] and card["processing"]["ppm_min"] == -100
    # the card carries what the data was, CPU-independently, and where it was trained
    manifest = json.loads((smoke / "smoke" / "manifest.json").read_text())
    assert card["training_data_sketch"] == manifest["content_sketch"]
    assert card["training_environment"]["torch"] and card["training_environment"]["numpy"]
    assert 0.05 <= card["temperature"] <= 20
    assert (smoke / "model" / "weights.safetensors").stat().st_size > 1000
    # the feature OOD scorer was fitted after training and ships in the bundle
    from lisentry.models.bundle import load_bundle
    b = load_bundle(smoke / "model")
    assert card["ood"]["score"] == "feature" and b.ood_scorer is not None
    assert b.ood_score_threshold == b.ood_scorer.thresholds_["q0.99"] and b.ood_scorer.n_val_ > 0
    # the cluster amount's presence gate too, with what it does on the validation runs
    assert b.presence_gate is not None and card["presence"]["latents"] == ["cluster_amount"]
    val = json.loads((smoke / "model" / "presence.json").read_text())["meta"]["validation"]
    assert val["cluster_amount"]["n_absent"] + val["cluster_amount"]["n_present"] > 0
    # refitted on the bundle's own training runs afterwards, it is the very same gate
    sha = card["presence"]["files_sha256"]
    proc = subprocess.run([sys.executable, "-m", "lisentry.training.presence", smoke / "model",
                           smoke / "smoke"], cwd=smoke, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "presence gate fitted" in proc.stderr
    assert json.loads((smoke / "model" / "card.json").read_text())["presence"]["files_sha256"] == sha
    proc = subprocess.run([sys.executable, "-m", "lisentry.training.presence", smoke / "model",
                           smoke / "model"], cwd=smoke, capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and str(smoke / "model") in proc.stderr
    # registered version + alias, loadable by URI without pickle
    res = lisentry("evaluate", "models:/smoke-model@champion", smoke / "smoke", "--out",
                   smoke / "eval.json", cwd=smoke, env=env)
    assert "all" in res.stdout and "macro-F1" in res.stdout
    ev = json.loads((smoke / "eval.json").read_text())
    assert ev["overall"]["n_runs"] == 20 and 0.0 <= ev["overall"]["accuracy"] <= 1.0
    # simulated data: the latent estimates are scored too, as the detector reports them
    assert "latent estimates (presence gate applied)" in res.stdout
    assert ev["latents"]["presence_gate"] is True
    assert ev["latents"]["cluster_amount"]["n_frames"] == ev["overall"]["n_frames"]
    # the trained bundle exports to one ONNX file that streams like the bundle
    res = lisentry("export", smoke / "model", "--out", smoke / "model.onnx", cwd=smoke)
    assert "same class on 100%" in res.stdout and (smoke / "model.onnx").stat().st_size > 1000
    assert not (smoke / "model.onnx.data").exists()


def test_config_errors_are_one_line(smoke):
    bad = smoke / "bad.yaml"
    bad.write_text("dataset: x\ntrain: {epoch: 3}\n")
    res = lisentry("train", bad, cwd=smoke, check=False)
    assert res.returncode == 2
    assert "did you mean 'epochs'" in res.stderr and "Traceback" not in res.stderr
    bad.write_text("dataset: x\ntrain: {weight_average_from: 2}\n")
    res = lisentry("train", bad, cwd=smoke, check=False)
    assert res.returncode == 2 and "weight_average_from" in res.stderr and "[0, 1]" in res.stderr
    assert "Traceback" not in res.stderr
    bad.write_text("dataset: x\ntrain: {augment: {noise_max_factor: 0.5}}\n")
    res = lisentry("train", bad, cwd=smoke, check=False)
    assert res.returncode == 2 and "noise_max_factor" in res.stderr and ">= 1" in res.stderr
    assert "Traceback" not in res.stderr
    # a family the data does not hold: named, with the families it has
    bad.write_text(f"dataset: {smoke / 'smoke'}\ntrain: {{oversample_families: [li_llzo], "
                   f"oversample_factor: 3}}\n")
    res = lisentry("train", bad, "--no-mlflow", "--out", smoke / "never", cwd=smoke, check=False)
    assert res.returncode == 2 and "li_llzo" in res.stderr and "it has [" in res.stderr
    assert "Traceback" not in res.stderr and not (smoke / "never").exists()


def test_tune_resumes_from_journal(smoke):
    args = ["tune", REPO / "configs" / "train-smoke.yaml", "--trials", "1",
            "--set", f"dataset={smoke / 'smoke'}", "--set", f"out={smoke / 'tuned'}",
            "--set", "train.epochs=1"]
    lisentry(*args, cwd=smoke)
    out = lisentry(*args, cwd=smoke).stdout
    assert "n_trials: 2" in out, out
    assert (smoke / "tuned.tuning" / "study.journal").exists()


def test_compare_models_also_scores_another_dataset(smoke):
    """``benchmarks/compare_models.py --also NAME=DIR``: the methods trained on one dataset's
    training split are scored on every run of another dataset too."""
    out = smoke / "compare.json"
    script = REPO / "benchmarks" / "compare_models.py"
    proc = subprocess.run([sys.executable, script, smoke / "smoke", "--only", "rules",
                           "--also", f"again={smoke / 'smoke'}", "--out", out],
                          cwd=smoke, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    ev = res["methods"]["rules"]["eval"]
    assert set(ev) == {"test", "again"}
    assert ev["again"]["overall"]["n_runs"] == 20 and len(ev["again"]["per_run_macro_f1"]) >= 1
    # the test runs are part of the dataset scored again, with the same fitted rules and policy
    for rid, f1 in ev["test"]["per_run_macro_f1"].items():
        assert ev["again"]["per_run_macro_f1"][rid] == f1
    bad = subprocess.run([sys.executable, script, smoke / "smoke", "--only", "rules",
                          "--also", str(smoke / "smoke")], cwd=smoke, capture_output=True, text=True)
    assert bad.returncode == 2 and "NAME=DIR" in bad.stderr and "Traceback" not in bad.stderr


def test_seed_study_pairs_bundles_against_a_baseline(smoke):
    """``benchmarks/seed_study.py``: a bundle scored on its test split and on another dataset,
    paired run by run against a baseline from ``compare_models.py``; identical bundles agree."""
    if not (smoke / "model" / "card.json").exists():
        pytest.skip("needs the bundle trained by test_train_track_register_evaluate")
    import shutil
    shutil.copytree(smoke / "model", smoke / "copy-seed1", dirs_exist_ok=True)
    cmp_out = smoke / "compare-base.json"
    subprocess.run([sys.executable, REPO / "benchmarks" / "compare_models.py", smoke / "smoke",
                    "--only", "rules", "--also", f"again={smoke / 'smoke'}", "--out", cmp_out],
                   cwd=smoke, capture_output=True, text=True, check=True)
    out = smoke / "seeds.json"
    proc = subprocess.run([sys.executable, REPO / "benchmarks" / "seed_study.py",
                           smoke / "model", smoke / "copy-seed1", "--dataset", smoke / "smoke",
                           "--also", f"again={smoke / 'smoke'}", "--baseline", f"{cmp_out}:rules",
                           "--out", out], cwd=smoke, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    a, b = res["bundles"]
    assert a["eval"]["again"]["overall"]["n_runs"] == 20
    assert a["eval"]["test"]["per_run_macro_f1"] == b["eval"]["test"]["per_run_macro_f1"]
    base = json.loads(cmp_out.read_text())["methods"]["rules"]["eval"]["again"]["per_run_macro_f1"]
    mine = a["eval"]["again"]["per_run_macro_f1"]
    common = sorted(set(mine) & set(base))
    assert a["paired"]["again"]["n_runs"] == len(common) > 0
    assert a["paired"]["again"]["mean"] == pytest.approx(
        sum(mine[r] - base[r] for r in common) / len(common))
    # "model" and "copy-seed1" are different configs; two seeds of one config form one group
    assert set(res["groups"]) == {"model", "copy"}
    bad = subprocess.run([sys.executable, REPO / "benchmarks" / "seed_study.py", smoke / "model",
                          "--dataset", smoke / "smoke", "--baseline", f"{cmp_out}:nope"],
                         cwd=smoke, capture_output=True, text=True)
    assert bad.returncode == 2 and "nope" in bad.stderr and "Traceback" not in bad.stderr


def test_window_features_train_evaluate_and_label_a_bruker_run(smoke):
    """``inputs.window_features``: the HGB's spectral window features enter the model as extra
    echem inputs, scaled on the training runs and recorded in the card; ``evaluate`` and
    ``label`` (on a Bruker + EC-Lab run, frame by frame) compute them the same way.
    ``train.min_epochs`` holds early stopping off until that epoch. ``model.echem_bins``: the
    piecewise-linear bin edges are fitted on the training runs and travel with the weights.
    ``inputs.symmetric_cells: sign_free`` is recorded in the card and lets ``label`` take
    ``--cell symmetric``."""
    import pandas as pd
    from lisentry.datasets.sim.run import simulate_run, write_run
    from lisentry.models.features import N_ECHEM
    from lisentry.models.window_features import MODEL_FEATURES
    out = smoke / "window"
    res = lisentry("train", REPO / "configs" / "train-smoke.yaml", "--set", f"dataset={smoke / 'smoke'}",
                   "--set", f"out={out}", "--set", "inputs.window_features=true",
                   "--set", "train.epochs=3", "--set", "train.patience=1",
                   "--set", "train.min_epochs=3", "--set", "train.lr=1e-9",
                   "--set", "model.echem_bins=4", "--set", "inputs.symmetric_cells=sign_free",
                   cwd=smoke)
    card = json.loads((out / "card.json").read_text())
    assert card["model"]["kwargs"]["echem_bins"] == 4
    assert card["inputs"]["symmetric_cells"] == "sign_free"
    assert card["training_config"]["inputs"]["symmetric_cells"] == "sign_free"
    from lisentry.models.bundle import load_bundle
    edges = load_bundle(out).model.echem_edges.numpy()
    assert edges.shape == (N_ECHEM + len(MODEL_FEATURES), 5) and np.all(np.diff(edges, axis=1) >= 0)
    # fitted, not the constructor's placeholder edges (-3 ... 3 on every column)
    assert not np.allclose(edges, np.linspace(-3, 3, 5))
    assert card["model"]["kwargs"]["n_echem"] == N_ECHEM + len(MODEL_FEATURES)
    wf = card["inputs"]["window_features"]
    assert wf["names"] == list(MODEL_FEATURES) and len(wf["scale"]) == 20 and min(wf["scale"]) > 0
    # a learning rate of 1e-9 never improves on epoch 1: patience 1 alone would stop at 2
    assert card["metrics"]["epochs_run"] == 3
    res = lisentry("evaluate", out, smoke / "smoke", cwd=smoke)
    assert "macro-F1" in res.stdout
    run = smoke / "bruker_run"
    write_run(simulate_run("hc_sulfide_overlithiation", 11, max_frames=6, run_id="w"), run)
    lisentry("label", run, "--echem-tz", "UTC", "--out", smoke / "labels.csv", "--model", out,
             cwd=smoke)
    labels = pd.read_csv(smoke / "labels.csv")
    assert len(labels) == 6 and labels["label"].notna().all()
    lili = smoke / "lili_run"
    write_run(simulate_run("li_liquid_li_cycling", 2, max_frames=5, run_id="l"), lili)
    lisentry("label", lili, "--echem-tz", "UTC", "--cell", "symmetric", "--out",
             smoke / "lili.csv", "--model", out, cwd=smoke)
    assert json.loads((smoke / "lili.json").read_text())["inputs"]["cell"] == "symmetric"
    # a config that is not a bool is one line
    res = lisentry("train", REPO / "configs" / "train-smoke.yaml", "--set",
                   f"dataset={smoke / 'smoke'}", "--set", "inputs.window_features=maybe",
                   cwd=smoke, check=False)
    assert res.returncode == 2 and "inputs.window_features" in res.stderr
    assert "Traceback" not in res.stderr


def test_seed_ensemble_trains_in_parallel_resumes_and_labels(smoke):
    """``ensemble.seeds``: one network per seed (two worker processes here), one bundle with
    their mean; a rerun with one seed more (in-process, same thread count) retrains only that
    member; the bundle evaluates."""
    from safetensors.torch import load_file
    base = ["train", REPO / "configs" / "train-smoke.yaml", "--set", f"dataset={smoke / 'smoke'}",
            "--set", f"out={smoke / 'ens'}", "--set", "train.epochs=2", "--set", "train.threads=1"]
    res = lisentry(*base, "--set", "ensemble.seeds=[3, 4]", "--set", "ensemble.workers=2",
                   cwd=smoke)
    assert "2 at a time" in res.stderr and "ensemble of 2" in res.stderr
    card = json.loads((smoke / "ens" / "card.json").read_text())
    assert card["model"]["name"] == "lisentry_ensemble"
    assert [m["seed"] for m in card["metrics"]["members"]] == [3, 4]
    first = load_file(str(smoke / "ens" / "weights.safetensors"))
    # the members are different networks (their seeds drew other weights)
    assert not torch_equal(first["members.0.head.weight"], first["members.1.head.weight"])
    res = lisentry(*base, "--set", "ensemble.seeds=[3, 4, 5]", cwd=smoke)
    assert "members [3, 4] already trained" in res.stderr and "ensemble of 3" in res.stderr
    again = load_file(str(smoke / "ens" / "weights.safetensors"))
    for k in first:   # members 3 and 4 were reused, not retrained
        assert torch_equal(first[k], again[k]), k
    assert any(k.startswith("members.2.") for k in again)
    res = lisentry("evaluate", smoke / "ens", smoke / "smoke", cwd=smoke)
    assert "macro-F1" in res.stdout
    # a seed list with a repeat is a config error, in one line
    res = lisentry(*base, "--set", "ensemble.seeds=[1, 1]", cwd=smoke, check=False)
    assert res.returncode == 2 and "ensemble.seeds" in res.stderr and "distinct" in res.stderr
    assert "Traceback" not in res.stderr


def test_current_free_members_route_frames_without_current(smoke):
    """``ensemble.current_free_seeds``: members trained on logs with the current masked, kept
    beside the others in one bundle that routes by the current's mask; the regular members'
    checkpoints are reused; a config without ``ensemble.seeds`` is one line."""
    import pandas as pd
    from lisentry.datasets.sim.run import simulate_run, write_run
    base = ["train", REPO / "configs" / "train-smoke.yaml", "--set", f"dataset={smoke / 'smoke'}",
            "--set", f"out={smoke / 'routed'}", "--set", "train.epochs=2", "--set", "train.threads=1",
            "--set", "ensemble.seeds=[3]"]
    lisentry(*base, cwd=smoke)
    res = lisentry(*base, "--set", "ensemble.current_free_seeds=[3]", cwd=smoke)
    assert "members [3] already trained" in res.stderr and "ensemble of 2" in res.stderr
    assert "member seed 3 (current-free)" in res.stderr
    ck = smoke / "routed.checkpoint"
    assert (ck / "member-seed3-nocurrent.safetensors").is_file()
    card = json.loads((smoke / "routed" / "card.json").read_text())
    assert card["model"]["kwargs"]["current_free"] == [False, True]
    from lisentry.models.bundle import load_bundle
    assert load_bundle(smoke / "routed").model.routed
    run = smoke / "routed_run"
    write_run(simulate_run("hc_sulfide_hold", 4, max_frames=5, run_id="r"), run)
    lisentry("label", run, "--echem-tz", "UTC", "--out", smoke / "routed.csv",
             "--model", smoke / "routed", cwd=smoke)
    assert len(pd.read_csv(smoke / "routed.csv")) == 5
    res = lisentry("train", REPO / "configs" / "train-smoke.yaml", "--set", f"dataset={smoke / 'smoke'}",
                   "--set", "ensemble.current_free_seeds=[3]", cwd=smoke, check=False)
    assert res.returncode == 2 and "ensemble.current_free_seeds needs ensemble.seeds" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_current_free_members_fine_tuned_from_their_regular_member(smoke):
    """``ensemble.current_free_from: members``: each current-free member starts from the
    regular member of its seed (trained first) and trains the fine-tune's epochs, in worker
    processes or in this one; it is reused while its parent's weights are unchanged and
    retrained when they change, and a seed without a parent is one line."""
    from safetensors.torch import load_file, save_file
    base = ["train", REPO / "configs" / "train-smoke.yaml", "--set", f"dataset={smoke / 'smoke'}",
            "--set", f"out={smoke / 'finetuned'}", "--set", "train.epochs=2",
            "--set", "train.threads=1", "--set", "ensemble.seeds=[3]",
            "--set", "ensemble.current_free_seeds=[3]", "--set", "ensemble.current_free_from=members"]
    ck = smoke / "finetuned.checkpoint"
    child_file = ck / "member-seed3-nocurrent.safetensors"

    def diff(a, b) -> float:
        return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)

    # a learning rate of 1e-9: one epoch leaves the parent's weights all but unchanged
    res = lisentry(*base, "--set", "ensemble.workers=2", "--set", "ensemble.current_free_epochs=1",
                   "--set", "ensemble.current_free_lr=1e-9", cwd=smoke)
    assert "member seed 3 (current-free)" in res.stderr and "ensemble of 2" in res.stderr
    parent = load_file(str(ck / "member-seed3.safetensors"))
    child = load_file(str(child_file))
    assert parent.keys() == child.keys() and diff(parent, child) < 1e-5
    note = json.loads((ck / "member-seed3-nocurrent.json").read_text())
    assert note["epochs_run"] == 1 and len(note["history"]) == 1 and note["parent_sha256"]
    # another fine-tune, in this process: the parent is reused as it was, the child moves
    tuned = [*base, "--set", "ensemble.workers=1", "--set", "ensemble.current_free_epochs=2",
             "--set", "ensemble.current_free_lr=0.01"]
    res = lisentry(*tuned, cwd=smoke)
    assert "members [3] already trained" in res.stderr
    assert all(torch_equal(v, load_file(str(ck / "member-seed3.safetensors"))[k])
               for k, v in parent.items())
    moved = load_file(str(child_file))
    assert diff(parent, moved) > 1e-3
    assert json.loads((ck / "member-seed3-nocurrent.json").read_text())["epochs_run"] == 2
    # nothing changed: both reused
    res = lisentry(*tuned, cwd=smoke)
    assert "members [3, '3 current-free'] already trained" in res.stderr
    # the parent's weights changed under the same key (as a run cut short would): the child
    # is fine-tuned again, from the new weights
    save_file({k: v + 0.5 if v.is_floating_point() else v for k, v in parent.items()},
              str(ck / "member-seed3.safetensors"))
    res = lisentry(*tuned, cwd=smoke)
    assert "members [3] already trained" in res.stderr
    assert "member seed 3 (current-free)" in res.stderr
    assert diff(moved, load_file(str(child_file))) > 1e-3
    res = lisentry(*base, "--set", "ensemble.current_free_seeds=[4]", cwd=smoke, check=False)
    assert res.returncode == 2 and "must be among ensemble.seeds" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def torch_equal(a, b) -> bool:
    import torch
    return bool(torch.equal(a, b))
