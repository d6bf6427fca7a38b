"""``watch`` with file-system events (watchdog): a change wakes the poll loop long before the
poll interval, and the JSON lines are the same as with polling alone (and as ``label``).
Without watchdog (or with ``--fs-events off``) polling alone still finds every frame."""
from __future__ import annotations

import io
import sys
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


def make_watcher(live, bundle_path, events: Path, **cfg):
    out, logs = io.StringIO(), []
    w = Watcher(live.nmr, LoadOptions(echem=live.mpt, echem_tz="UTC"), load_bundle(bundle_path),
                events, None, None, WatchConfig(**{"echem_grace_s": 3600.0, **cfg}),
                stdout=out, log=logs.append)
    return w, out, logs


def replay_live(live, w, helpers, events: Path, per_frame_timeout_s: float) -> list[float]:
    """Run ``w`` in a thread while ``live`` acquires frame after frame; seconds from each
    frame's last file written to its JSON line."""
    th = threading.Thread(target=w.run, daemon=True)
    th.start()
    waits = []
    try:
        time.sleep(0.3)                                  # the watcher is up and waiting
        for k in range(len(live.sim.raws)):
            live.begin(k)                                # acqus + zero-filled fid
            time.sleep(0.1)
            live.echem_through_frame(k)
            live.finish(k)                               # data, acqus, audita last
            t0 = time.monotonic()
            while len(helpers.frame_events(events)) < k + 1:
                if time.monotonic() - t0 > per_frame_timeout_s:
                    raise AssertionError(f"frame {k + 1} not emitted within "
                                         f"{per_frame_timeout_s} s")
                time.sleep(0.01)
            waits.append(time.monotonic() - t0)
    finally:
        w.stop()
        th.join(timeout=30)
    assert not th.is_alive()
    return waits


def test_fs_events_wake_watch_early_and_lines_equal_polling_and_label(sim_run, tiny_bundle,
                                                                      tmp_path, helpers):
    pytest.importorskip("watchdog", reason="watchdog not installed (pip install 'lisentry[watch]')")
    # events on, a poll interval far longer than the test may wait: only events can be fast
    live = helpers.LiveRun(sim_run, tmp_path / "run_ev", topspin="4.3")
    ev_path = tmp_path / "ev.jsonl"
    w, out, logs = make_watcher(live, tiny_bundle, ev_path, poll_s=60.0, fs_events="on")
    waits = replay_live(live, w, helpers, ev_path, per_frame_timeout_s=15.0)
    assert w.fs_wakeup is not None and w.fs_wakeup.n_wakeups > 0, logs
    assert not [m for m in logs if "polling only" in m]
    assert max(waits) < 15.0 and float(np.median(waits)) < 2.0, waits
    lines_ev = helpers.read_events(ev_path)

    # the same run, polling alone
    live2 = helpers.LiveRun(sim_run, tmp_path / "run_poll", topspin="4.3")
    poll_path = tmp_path / "poll.jsonl"
    w2, _, _ = make_watcher(live2, tiny_bundle, poll_path, poll_s=0.05, fs_events="off")
    replay_live(live2, w2, helpers, poll_path, per_frame_timeout_s=30.0)
    assert w2.fs_wakeup is None
    lines_poll = helpers.read_events(poll_path)
    assert lines_ev == lines_poll                        # identical JSON lines
    assert [e["frame"] for e in lines_ev] == [r.expno for r in sim_run.raws]

    # and the labels of `label` on the finished run
    ref_csv = tmp_path / "ref.csv"
    res = CliRunner().invoke(app, ["label", str(live.nmr), "--echem", str(live.mpt),
                                   "--echem-tz", "UTC", "--out", str(ref_csv),
                                   "--model", str(tiny_bundle)])
    assert res.exit_code == 0, res.output + res.stderr
    ref = pd.read_csv(ref_csv)
    assert [e["label"] for e in lines_ev] == ref["label"].tolist()
    got = np.array([[e[c] for c in P_COLS] for e in lines_ev], float)
    np.testing.assert_allclose(got, ref[P_COLS].to_numpy(float), rtol=0, atol=1e-5)


def test_without_watchdog_fs_events_on_falls_back_to_polling(sim_run, tiny_bundle, tmp_path,
                                                             helpers, monkeypatch):
    for mod in ("watchdog", "watchdog.events", "watchdog.observers"):
        monkeypatch.setitem(sys.modules, mod, None)      # import fails as if not installed
    live = helpers.LiveRun(sim_run, tmp_path / "run", topspin="2.1")
    ev_path = tmp_path / "ev.jsonl"
    w, out, logs = make_watcher(live, tiny_bundle, ev_path, poll_s=0.05, fs_events="on")
    replay_live(live, w, helpers, ev_path, per_frame_timeout_s=30.0)
    assert w.fs_wakeup is None
    assert sum("watchdog is not installed" in m and "polling only" in m for m in logs) == 1, logs
    assert [e["frame"] for e in helpers.frame_events(ev_path)] == [r.expno for r in sim_run.raws]


def test_own_reads_and_output_files_do_not_wake(tmp_path):
    pytest.importorskip("watchdog", reason="watchdog not installed (pip install 'lisentry[watch]')")
    from lisentry.detector.fswake import FsWakeup
    data = tmp_path / "nmr" / "1"
    data.mkdir(parents=True)
    (data / "fid").write_bytes(b"\1" * 4096)
    own = tmp_path / "nmr" / "events.jsonl"
    wake = FsWakeup.start([(tmp_path / "nmr", True)], "on", ignore=[own])
    assert wake is not None
    try:
        time.sleep(0.3)
        wake.clear()
        for _ in range(5):
            (data / "fid").read_bytes()                 # the watcher reading a frame
        own.write_text("{}\n")                           # the watcher's own output
        (tmp_path / "nmr" / ".events.jsonl.abc.tmp").write_text("x")   # its atomic temp file
        assert not wake.wait(0.5), "reads or own files woke the loop"
        (data / "audita.txt").write_text("end")          # TopSpin finishing the frame
        assert wake.wait(5.0)
    finally:
        wake.stop()


def test_fs_events_bad_value_is_one_line_error(tmp_path, tiny_bundle):
    res = CliRunner().invoke(app, ["watch", str(tmp_path), "--events", str(tmp_path / "e.jsonl"),
                                   "--model", str(tiny_bundle), "--fs-events", "maybe"])
    assert res.exit_code == 2
    assert res.stderr.strip().splitlines() == [
        "error: --fs-events must be one of auto, on, off, got 'maybe'"]
