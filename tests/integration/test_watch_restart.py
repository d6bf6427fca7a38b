"""``watch`` is restart-safe: killed at any moment and restarted with the same ``--events`` and
``--state``, the events file holds every frame exactly once with the labels of an uninterrupted
run; Ctrl-C stops it cleanly with its outputs flushed."""
from __future__ import annotations

import io
import json
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from lisentry.datasets.frame import CLASSES
from lisentry.datasets.loading import LoadOptions
from lisentry.detector.cli import app
from lisentry.detector.watch import WatchConfig, Watcher
from lisentry.models.bundle import load_bundle

P_COLS = [f"p_{c}" for c in CLASSES]


class Crash(Exception):
    """Stands in for the process dying."""


def uninterrupted(live, bundle: Path, out: Path) -> pd.DataFrame:
    res = CliRunner().invoke(app, ["label", str(live.nmr), "--echem", str(live.mpt),
                                   "--echem-tz", "UTC", "--out", str(out), "--model", str(bundle)])
    assert res.exit_code == 0, res.output + res.stderr
    return pd.read_csv(out)


def check_exactly_once(events: list[dict], ref: pd.DataFrame) -> None:
    frames = [e["frame"] for e in events if e.get("event") == "frame"]
    assert frames == ref["frame"].tolist()          # no drop, no repeat, in order
    ev = [e for e in events if e.get("event") == "frame"]
    assert [e["label"] for e in ev] == ref["label"].tolist()
    for c in P_COLS + ["t_s", "ood_score"]:
        np.testing.assert_allclose([e[c] for e in ev], ref[c].to_numpy(float), atol=1e-5, rtol=0)


def watcher(live, bundle, events, state):
    return Watcher(live.nmr, LoadOptions(echem=live.mpt, echem_tz="UTC"), load_bundle(bundle),
                   events, state, None, WatchConfig(poll_s=0.01, echem_grace_s=3600.0),
                   stdout=io.StringIO(), log=lambda m: None)


@pytest.mark.parametrize("crash_at", [1, 4])
def test_crash_between_event_and_state_is_repaired(live_run, tiny_bundle, tmp_path, helpers,
                                                   monkeypatch, crash_at):
    """The worst moment: the frame's line is on disk, the state file is not yet updated."""
    live = live_run
    for k in range(len(live.sim.raws)):
        live.frame(k)
    events, state = tmp_path / "ev.jsonl", tmp_path / "st.json"
    calls = {"n": 0}
    real_save = Watcher._save

    def dying_save(self):
        calls["n"] += 1
        if calls["n"] == crash_at + 1:
            raise Crash
        real_save(self)

    monkeypatch.setattr(Watcher, "_save", dying_save)
    w1 = watcher(live, tiny_bundle, events, state)
    with pytest.raises(Crash):
        w1.poll_once()
    w1.events.close()
    first = helpers.frame_events(events)
    assert [e["frame"] for e in first] == list(range(1, crash_at + 2))   # line written, state not
    monkeypatch.setattr(Watcher, "_save", real_save)
    w2 = watcher(live, tiny_bundle, events, state)
    assert w2.poll_once() == len(live.sim.raws) - crash_at   # re-runs the crashed frame silently
    w2.events.close()
    check_exactly_once(helpers.read_events(events), uninterrupted(live, tiny_bundle,
                                                                  tmp_path / "ref.csv"))


def _start_writer(live, events: Path, gap_s: float, errors: list) -> threading.Thread:
    def run():
        try:
            deadline = time.monotonic() + 120
            while not events.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            for k in range(len(live.sim.raws)):
                live.begin(k)
                time.sleep(gap_s / 2)
                live.echem_through_frame(k)
                live.finish(k)
                time.sleep(gap_s / 2)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
    th = threading.Thread(target=run, daemon=True)
    th.start()
    return th


def _wait_lines(events: Path, n: int, proc, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if events.exists() and len(events.read_text().splitlines()) >= n:
            return
        if proc.poll() is not None:
            raise AssertionError(f"watch exited early ({proc.returncode}): {proc.stderr.read()}")
        time.sleep(0.05)
    raise AssertionError(f"fewer than {n} lines in {events} after {timeout} s")


def test_sigkill_mid_run_then_restart(live_run, tiny_bundle, tmp_path, helpers):
    live = live_run
    events, state = tmp_path / "ev.jsonl", tmp_path / "watch-state.json"
    args = ["watch", live.nmr, "--echem", live.mpt, "--echem-tz", "UTC", "--events", events,
            "--state", state, "--model", tiny_bundle, "--poll-s", "0.1"]
    errors: list = []
    p1 = helpers.popen(*args)
    th = _start_writer(live, events, 0.6, errors)
    try:
        _wait_lines(events, 3, p1)
        p1.send_signal(signal.SIGKILL)
        p1.wait(30)
    finally:
        if p1.poll() is None:
            p1.kill()
        p1.stdout.close(), p1.stderr.close()
    n_before = len(helpers.frame_events(events))
    assert 3 <= n_before < len(live.sim.raws), "the kill did not happen mid-run"
    p2 = helpers.popen(*args, "--until-idle", "1.5")
    out2, err2 = p2.communicate(timeout=240)
    th.join(60)
    assert not errors, errors
    assert p2.returncode == 0, err2
    assert "resuming" in err2 and "Traceback" not in err2
    evs = helpers.read_events(events)
    # the second session printed only the frames it added
    assert [json.loads(s) for s in out2.splitlines() if s.strip()] == evs[len(evs) - len(out2.splitlines()):]
    check_exactly_once(evs, uninterrupted(live, tiny_bundle, tmp_path / "ref.csv"))


def test_sigint_exits_cleanly_with_outputs_flushed(live_run, tiny_bundle, tmp_path, helpers):
    live = live_run
    events = tmp_path / "ev.jsonl"
    errors: list = []
    proc = helpers.popen("watch", live.nmr, "--echem", live.mpt, "--echem-tz", "UTC",
                         "--events", events, "--model", tiny_bundle, "--poll-s", "0.1")
    th = _start_writer(live, events, 0.4, errors)
    try:
        _wait_lines(events, 2, proc)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    th.join(60)
    assert proc.returncode in (0, 130), err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert "watch stopped" in err
    evs = helpers.read_events(events)              # every line complete JSON
    assert [json.loads(s) for s in out.splitlines() if s.strip()] == evs
    frames = [e["frame"] for e in evs if e.get("event") == "frame"]
    assert frames == list(range(1, len(frames) + 1)) and len(frames) >= 2
    state = Path(f"{events}.state.json")          # the default state file, consistent
    assert json.loads(state.read_text())["processed"] == frames


def test_restart_with_another_model_is_a_one_line_error(live_run, tiny_bundle, tmp_path):
    """A state saved with one bundle (e.g. before the default model was updated) cannot
    continue with another: refused with one line naming the state file, nothing repeated."""
    import shutil

    from lisentry.models.bundle import attach_presence_gate
    from lisentry.models.presence import PresenceGate
    live = live_run
    for k in range(3):
        live.frame(k)
    events, state = tmp_path / "ev.jsonl", tmp_path / "st.json"
    w1 = watcher(live, tiny_bundle, events, state)
    assert w1.poll_once() == 3
    w1.events.close()
    before = events.read_text()
    other = tmp_path / "other"
    shutil.copytree(tiny_bundle, other)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 32))     # the tiny net's head features: 2 x hidden 16
    attach_presence_gate(other, PresenceGate(["cluster_amount"]).fit(
        X, {"cluster_amount": np.where(X[:, 0] > 0, 0.1, 0.0)}))
    res = CliRunner().invoke(app, ["watch", str(live.nmr), "--echem", str(live.mpt),
                                   "--echem-tz", "UTC", "--events", str(events),
                                   "--state", str(state), "--model", str(other), "--until-idle", "0.5"])
    assert res.exit_code != 0
    err = res.stderr.strip().splitlines()
    assert len(err) == 1 and str(state) in err[0] and "another model bundle" in err[0]
    assert "Traceback" not in res.output + res.stderr
    assert events.read_text() == before


def test_restart_with_another_cell_is_a_one_line_error(live_run, tiny_bundle, tmp_path):
    """A state saved while reading the run as a symmetric cell cannot continue as a half cell
    (its features were magnitudes): one line naming the state file, nothing repeated."""
    import json as _json
    import shutil
    live = live_run
    for k in range(2):
        live.frame(k)
    sym = tmp_path / "sym"
    shutil.copytree(tiny_bundle, sym)
    card = _json.loads((sym / "card.json").read_text())
    card["inputs"]["symmetric_cells"] = "sign_free"
    (sym / "card.json").write_text(_json.dumps(card))
    events, state = tmp_path / "ev.jsonl", tmp_path / "st.json"
    args = ["watch", str(live.nmr), "--echem", str(live.mpt), "--echem-tz", "UTC",
            "--events", str(events), "--state", str(state), "--model", str(sym), "--until-idle", "0.3"]
    res = CliRunner().invoke(app, args + ["--cell", "symmetric"])
    assert res.exit_code == 0, res.stderr
    before = events.read_text()
    assert before.count('"event": "frame"') == 2 or before.count('"event":"frame"') == 2
    res = CliRunner().invoke(app, args)
    err = res.stderr.strip().splitlines()
    assert res.exit_code != 0 and len(err) == 1 and str(state) in err[0]
    assert "symmetric cell, not --cell half" in err[0] and "--cell" in err[0]
    assert events.read_text() == before
    res = CliRunner().invoke(app, args + ["--cell", "symmetric"])      # as saved: resumes
    assert res.exit_code == 0, res.stderr
    assert events.read_text().startswith(before)
