"""Training the members of a seed ensemble (``ensemble.seeds``), one after the other or in
parallel worker processes, each resumable.

Each member is an ordinary network trained by :func:`lisentry.training.loop._fit_member` with
its own seed. Its best weights go to ``<out>.checkpoint/member-seed<S>.safetensors`` with a JSON
note of what produced them (a hash of the resolved config without the seed list, the member's
seed, the training data's hash and the torch thread count): an interrupted ensemble run resumes with the members still
missing, and a changed config or dataset retrains them all.

Current-free members (``ensemble.current_free_seeds``) are trained with the current's columns
masked, from scratch or (``ensemble.current_free_from: members``) fine-tuned from the regular
member of their seed in a second round, once the regular members are done; a fine-tuned
member's key includes its parent's, so a retrained parent retrains it.

Parallel members (``ensemble.workers`` > 1) run in spawned processes with
``train.threads`` torch threads each (default: the CPU count divided by the workers): on a
2-core machine two single-threaded members take about as long as one two-threaded member,
since a small GRU uses the second thread poorly. A member's weights depend on its thread
count, so a config that must reproduce bit for bit fixes ``train.threads``.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Sequence

import torch

from lisentry.training.config import TrainConfig

# (the presence gate is fitted after training: it never changes the weights)
_NOT_IN_KEY = ("out", "mlflow", "ensemble", "presence")


def member_key(cfg: TrainConfig, seed: int, data_hash: str | None, threads: int,
               current_free: bool = False) -> str:
    """What a member's weights depend on: the resolved config except where the bundle goes,
    the tracking and the ensemble's seed list and workers; the member's seed; the data; the
    torch threads it trains with (the effective count, not the config's 0 = automatic)."""
    d = {k: v for k, v in cfg.to_dict().items() if k not in _NOT_IN_KEY}
    d["train"] = {k: v for k, v in d["train"].items() if k != "threads"}
    # settings added later, at the values that reproduce configs from before they existed,
    # leave the key (and so the reuse of members trained then) unchanged
    if d.get("inputs", {}).get("symmetric_cells") == "signed":
        d["inputs"].pop("symmetric_cells")
    if "binned_features" in d.get("inputs", {}) and not d["inputs"]["binned_features"]:
        d["inputs"].pop("binned_features")
    if d.get("inputs", {}).get("window_feature_set") == "spectral":
        d["inputs"].pop("window_feature_set")
    elif d.get("inputs", {}).get("window_feature_set") == "all" and d["inputs"].get("window_features"):
        # members trained since a late-starting log restarts the log-history features
        d["inputs"]["log_history"] = "restarted"
    if d.get("inputs") == {"window_features": False}:
        d.pop("inputs")
    if d["train"].get("select_by", "per_run") == "per_run":
        d["train"].pop("select_by", None)
    if d["train"].get("min_epochs", 0) == 0:
        d["train"].pop("min_epochs", None)
    if d["train"].get("augment", {}).get("drop_current", 0.0) == 0.0:
        d["train"].get("augment", {}).pop("drop_current", None)
    if d["train"].get("augment", {}).get("drop_echem_until_current", 0.0) == 0.0:
        d["train"].get("augment", {}).pop("drop_echem_until_current", None)
    d["seed"] = int(seed)
    if current_free:      # trained and validated on logs without currents
        d["current_free"] = True
    d["training_data_hash"] = data_hash
    d["threads"] = int(threads)
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()


def _finetune_schedule(cfg: TrainConfig) -> tuple[int, float]:
    """The fine-tune's epochs and learning rate (0 / null in the config: train.epochs / lr)."""
    en = cfg["ensemble"]
    return (int(en["current_free_epochs"] or cfg["train"]["epochs"]),
            float(en["current_free_lr"] or cfg["train"]["lr"]))


def finetune_key(cfg: TrainConfig, parent_key: str, free_key: str) -> str:
    """The key of a current-free member fine-tuned from a regular member: its own key (as if
    trained from scratch), the parent's key (its weights and what they depend on) and the
    fine-tune's epochs and learning rate."""
    epochs, lr = _finetune_schedule(cfg)
    d = {"current_free": free_key, "from_member": parent_key, "epochs": epochs, "lr": lr}
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()


def _fine_tuned(cfg: TrainConfig, current_free: bool) -> bool:
    """Whether this member is fine-tuned from its seed's regular member."""
    return current_free and cfg["ensemble"]["current_free_from"] == "members"


def _finetune_args(cfg: TrainConfig, ckpt_dir: Path, seed: int, current_free: bool) -> dict:
    """Keyword arguments of ``_fit_member`` for a current-free member fine-tuned from its
    regular member (whose checkpoint must be written already); empty otherwise."""
    if not _fine_tuned(cfg, current_free):
        return {}
    from safetensors.torch import load_file
    w, _ = _paths(Path(ckpt_dir), seed)
    epochs, lr = _finetune_schedule(cfg)
    return {"init_state": load_file(str(w), device="cpu"), "epochs": epochs, "lr": lr}


def _parent_sha256(ckpt_dir: Path, seed: int) -> str | None:
    """SHA-256 of the regular member's weight file (None without one): a fine-tuned member's
    note records it, so that a parent retrained under the same key (a torn note, a run cut
    short by ``train.max_minutes``) retrains its child too."""
    w, _ = _paths(Path(ckpt_dir), seed)
    return hashlib.sha256(w.read_bytes()).hexdigest() if w.is_file() else None


def _parent_unchanged(ckpt_dir: Path, seed: int) -> bool:
    """Whether a fine-tuned member's note records the parent weights on disk now."""
    _, note = _paths(Path(ckpt_dir), seed, True)
    try:
        recorded = json.loads(note.read_text(encoding="utf-8")).get("parent_sha256")
    except (OSError, ValueError):
        return False
    return recorded is not None and recorded == _parent_sha256(ckpt_dir, seed)


def _name(seed: int, current_free: bool = False) -> str:
    return f"seed{seed}" + ("-nocurrent" if current_free else "")


def _paths(ckpt_dir: Path, seed: int, current_free: bool = False) -> tuple[Path, Path]:
    n = _name(seed, current_free)
    return (ckpt_dir / f"member-{n}.safetensors", ckpt_dir / f"member-{n}.json")


def _load_done(ckpt_dir: Path, seed: int, key: str, current_free: bool = False):
    from safetensors.torch import load_file
    from lisentry.training.loop import MemberFit
    w, note = _paths(ckpt_dir, seed, current_free)
    if not (w.is_file() and note.is_file()):
        return None
    try:
        meta = json.loads(note.read_text(encoding="utf-8"))
        if meta.get("key") != key:
            return None
        state = load_file(str(w), device="cpu")
    except (OSError, ValueError):
        return None  # a torn or foreign file: train the member again
    return MemberFit(state=state, best_val_f1=meta["val_macro_f1"],
                     best_epoch_f1=meta["best_epoch_f1"],
                     weight_average_f1=meta.get("weight_average_f1"),
                     epochs_run=meta["epochs_run"], minutes=meta["minutes"], seed=int(seed),
                     history=meta.get("history", []))


def _save_done(ckpt_dir: Path, fit, key: str, current_free: bool = False,
               parent_sha256: str | None = None) -> None:
    from safetensors.torch import save_file
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    w, note = _paths(ckpt_dir, fit.seed, current_free)
    tmp = w.with_suffix(".tmp")
    save_file({k: v.contiguous() for k, v in fit.state.items()}, str(tmp))
    os.replace(tmp, w)
    meta = {"key": key, "seed": fit.seed, "val_macro_f1": fit.best_val_f1,
            "best_epoch_f1": fit.best_epoch_f1, "weight_average_f1": fit.weight_average_f1,
            "epochs_run": fit.epochs_run, "minutes": fit.minutes, "history": fit.history,
            "threads": torch.get_num_threads()}
    if parent_sha256 is not None:     # fine-tuned from these weights
        meta["parent_sha256"] = parent_sha256
    tmp = note.with_suffix(".jtmp")
    tmp.write_text(json.dumps(meta), encoding="utf-8")
    os.replace(tmp, note)


def _label(seed: int, current_free: bool) -> str:
    return f"member seed {seed}" + (" (current-free)" if current_free else "")


def _fit_and_save(cfg: TrainConfig, ckpt_dir: Path, seed: int, current_free: bool, key: str,
                  ds, train_runs, val_runs, noise_window, device, **kw):
    """Train one member (fine-tuned from its regular member when that is due) and write its
    checkpoint with the note; the note of a fine-tuned member records its parent's weights."""
    from lisentry.training.loop import _fit_member
    finetune = _finetune_args(cfg, ckpt_dir, seed, current_free)
    fit = _fit_member(cfg, seed, ds, train_runs, val_runs, noise_window, device, **kw, **finetune)
    _save_done(ckpt_dir, fit, key, current_free,
               _parent_sha256(ckpt_dir, seed) if finetune else None)
    return fit


def _worker(cfg_data: dict, source, seed: int, ckpt_dir: str, key: str, threads: int,
            current_free: bool = False) -> int:
    """One member in a spawned process: loads the data, trains, writes the checkpoint."""
    from lisentry.training.data import mask_current
    from lisentry.training.loop import _prepare, pick_device
    torch.set_num_threads(threads)
    cfg = TrainConfig(data=cfg_data, source=source)
    ds, _, train_runs, val_runs, noise_window, window = _prepare(cfg)
    if current_free:
        train_runs, val_runs = mask_current(train_runs), mask_current(val_runs)
    n_epochs = (_finetune_schedule(cfg)[0] if _fine_tuned(cfg, current_free)
                else cfg["train"]["epochs"])
    label = _label(seed, current_free)

    def report(epoch: int, loss: float, f1: float) -> None:
        if epoch % 5 == 0 or epoch == n_epochs:
            print(f"  {label}: epoch {epoch}/{n_epochs}, loss {loss:.3f}, "
                  f"val macro-F1 {f1:.3f}", file=sys.stderr, flush=True)

    fit = _fit_and_save(cfg, Path(ckpt_dir), seed, current_free, key, ds, train_runs, val_runs,
                        noise_window, pick_device(cfg["train"]["device"]), progress=False,
                        on_epoch=report, window=window)
    print(f"ensemble {label}: val macro-F1 {fit.best_val_f1:.3f} after "
          f"{fit.epochs_run} epochs, {fit.minutes:.1f} min", file=sys.stderr, flush=True)
    return seed


def fit_members(cfg: TrainConfig, seeds: Sequence[int], ckpt_dir: Path, ds, train_runs, val_runs,
                noise_window, device, *, progress: bool = True, tracker=None, window=None,
                current_free_seeds: Sequence[int] = ()) -> list:
    """Train (or resume) one member per seed, then one current-free member per
    ``current_free_seeds`` (trained and validated with the current's columns masked); returns
    their :class:`MemberFit` in that order."""
    from lisentry.training.data import mask_current
    data_hash = ds.manifest.get("content_hash")
    members = [(int(s), False) for s in seeds] + [(int(s), True) for s in current_free_seeds]
    workers = max(1, min(int(cfg["ensemble"]["workers"]), len(members)))
    threads = (int(cfg["train"]["threads"]) or max(1, (os.cpu_count() or 1) // workers)
               if workers > 1 else torch.get_num_threads())
    keys = {m: member_key(cfg, m[0], data_hash, threads, m[1]) for m in members}
    from_members = cfg["ensemble"]["current_free_from"] == "members"
    if from_members:   # a fine-tuned member depends on its parent's weights
        keys.update({m: finetune_key(cfg, keys[(m[0], False)], keys[m]) for m in members if m[1]})
    done = {m: f for m in members if (f := _load_done(ckpt_dir, m[0], keys[m], m[1])) is not None}
    if from_members:   # ... and on the very weights it started from
        done = {m: f for m, f in done.items()
                if not m[1] or ((m[0], False) in done and _parent_unchanged(ckpt_dir, m[0]))}
    if done:
        names = [f"{m[0]} current-free" if m[1] else m[0] for m in members if m in done]
        print(f"ensemble: members {names} already trained ({ckpt_dir}), reused", file=sys.stderr)
    todo = [m for m in members if m not in done]
    # fine-tuned members start from their parents' checkpoints: a second round after the first
    rounds = ([[m for m in todo if not m[1]], [m for m in todo if m[1]]] if from_members
              else [todo])
    for batch in (r for r in rounds if r):
        if workers <= 1:
            masked = None
            for m in batch:
                tr, va = train_runs, val_runs
                if m[1]:
                    masked = masked or (mask_current(train_runs), mask_current(val_runs))
                    tr, va = masked
                done[m] = _fit_and_save(cfg, ckpt_dir, m[0], m[1], keys[m], ds, tr, va,
                                        noise_window, device, progress=progress,
                                        label=_label(*m), window=window)
            continue
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor
        n = min(workers, len(batch))
        print(f"ensemble: training {len(batch)} members, {n} at a time "
              f"({threads} torch thread{'s' if threads > 1 else ''} each)", file=sys.stderr)
        t0 = time.monotonic()
        with ProcessPoolExecutor(n, mp_context=mp.get_context("spawn")) as pool:
            futs = [pool.submit(_worker, cfg.to_dict(), cfg.source, m[0], str(ckpt_dir), keys[m],
                                threads, m[1]) for m in batch]
            for f in futs:
                f.result()
        print(f"ensemble: members trained in {(time.monotonic() - t0) / 60:.1f} min",
              file=sys.stderr)
        for m in batch:
            fit = _load_done(ckpt_dir, m[0], keys[m], m[1])
            if fit is None:
                raise RuntimeError(f"ensemble {_label(*m)}: no checkpoint in {ckpt_dir}")
            done[m] = fit
    fits = [done[m] for m in members]
    if tracker is not None:
        for m, f in zip(members, fits):
            n = f"member{m[0]}" + ("_nocurrent" if m[1] else "")
            for epoch, (loss, f1) in enumerate(f.history, start=1):
                tracker.log_metrics({f"{n}_train_loss": loss, f"{n}_val_macro_f1": f1}, step=epoch)
    return fits
