"""``watch`` follows a live acquisition written the way TopSpin and EC-Lab write it, emits every
completed frame exactly once, never an in-progress one, and gives the same labels and
probabilities as ``label`` on the finished run (batch == streaming)."""
from __future__ import annotations

import io
import json
import math
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
from lisentry.detector.outputs import LABEL_COLUMNS
from lisentry.detector.watch import WatchConfig, Watcher
from lisentry.models.bundle import load_bundle

P_COLS = [f"p_{c}" for c in CLASSES]


def make_watcher(live, bundle_path, events: Path, **cfg):
    out, logs = io.StringIO(), []
    w = Watcher(live.nmr, LoadOptions(echem=live.mpt, echem_tz="UTC"), load_bundle(bundle_path),
                events, None, None, WatchConfig(**{"poll_s": 0.01, "echem_grace_s": 3600.0, **cfg}),
                stdout=out, log=logs.append)
    return w, out, logs


def label_reference(nmr: Path, mpt: Path, bundle: Path, out: Path) -> pd.DataFrame:
    """``lisentry label`` on the finished run, as a user would call it."""
    res = CliRunner().invoke(app, ["label", str(nmr), "--echem", str(mpt), "--echem-tz", "UTC",
                                   "--out", str(out), "--model", str(bundle)])
    assert res.exit_code == 0, res.output + res.stderr
    return pd.read_csv(out)


def assert_same_as_label(events: list[dict], ref: pd.DataFrame) -> None:
    assert [e["frame"] for e in events] == ref["frame"].tolist()
    assert [e["label"] for e in events] == ref["label"].tolist()
    assert [e["timestamp"] for e in events] == ref["timestamp"].tolist()
    assert [e["status"] for e in events] == ref["status"].tolist()
    for col in P_COLS + ["t_s", "potential_V", "current_A", "ood_score", "metal_amount"]:
        got = np.array([np.nan if e[col] is None else e[col] for e in events], float)
        np.testing.assert_allclose(got, ref[col].to_numpy(float), rtol=0, atol=1e-5,
                                   err_msg=col, equal_nan=True)
    for e in events:  # every output column is in every frame line
        assert set(LABEL_COLUMNS) <= set(e)
        assert math.isclose(sum(e[c] for c in P_COLS), 1.0, abs_tol=1e-9)


@pytest.mark.parametrize("topspin", ["2.1", "4.3"])
def test_replay_poll_once_emits_completed_frames_exactly_once(live_run, tiny_bundle, tmp_path,
                                                              helpers, topspin):
    live = helpers.LiveRun(live_run.sim, tmp_path / f"run{topspin}", topspin=topspin)
    events = tmp_path / "ev.jsonl"
    w, out, logs = make_watcher(live, tiny_bundle, events)
    assert w.poll_once() == 0                       # nothing acquired yet
    n = len(live.sim.raws)
    for k in range(n):
        live.begin(k)                               # acqus + zero-filled full-size fid
        assert w.poll_once() == 0, f"frame {k + 1} emitted while acquiring"
        assert w.poll_once() == 0
        live.finish(k)
        if k > 0:                                   # data complete, log not yet past its end
            assert w.poll_once() == 0, f"frame {k + 1} emitted before the log covered it"
        live.echem_through_frame(k)
        assert w.poll_once() == 1
        assert w.poll_once() == 0                   # and never again
        assert [e["frame"] for e in helpers.frame_events(events)] == list(range(1, k + 2))
    w.events.close()
    ev = helpers.frame_events(events)
    stdout_lines = [json.loads(s) for s in out.getvalue().splitlines()]
    assert stdout_lines == helpers.read_events(events)    # stdout and file carry the same events
    assert not [e for e in helpers.read_events(events) if e.get("event") == "skipped"]
    ref = label_reference(live.nmr, live.mpt, tiny_bundle, tmp_path / "ref.csv")
    assert len(ref) == n
    assert len(set(ref["label"])) > 1, "tiny model gives one label only: comparison too weak"
    assert_same_as_label(ev, ref)


def test_zero_filled_frame_then_next_started_is_skipped_not_waited_on(live_run, tiny_bundle,
                                                                      tmp_path, helpers):
    """An aborted acquisition (fid still all zeros, a later experiment started) must not block
    the watcher forever: it is reported as skipped and the next frames are emitted."""
    live = live_run
    events = tmp_path / "ev.jsonl"
    w, out, logs = make_watcher(live, tiny_bundle, events)
    live.frame(0)
    live.begin(1)                                   # frame 2 is aborted: never finished
    assert w.poll_once() == 1
    assert w.poll_once() == 0                       # frame 2 might still be running
    live.frame(2)
    live.frame(3)
    assert w.poll_once() == 3                       # 2 skipped, 3 and 4 emitted
    evs = helpers.read_events(events)
    assert [(e.get("event"), e["frame"]) for e in evs] == [
        ("frame", 1), ("skipped", 2), ("frame", 3), ("frame", 4)]
    assert "zeros" in evs[1]["reason"] or "no data" in evs[1]["reason"]
    assert any(str(live.expdir(1)) in m for m in logs)


def test_watch_subprocess_against_writer_thread(live_run, tiny_bundle, tmp_path, helpers):
    live = live_run
    events = tmp_path / "ev.jsonl"
    proc = helpers.popen("watch", live.nmr, "--echem", live.mpt, "--echem-tz", "UTC",
                         "--events", events, "--model", tiny_bundle,
                         "--until-idle", "3", "--poll-s", "0.2")
    errors: list[BaseException] = []

    def writer():
        try:
            deadline = time.monotonic() + 120
            while not events.exists():            # the watcher is up and polling
                if proc.poll() is not None or time.monotonic() > deadline:
                    return
                time.sleep(0.1)
            for k in range(len(live.sim.raws)):
                live.begin(k)
                time.sleep(0.3)                    # zero-filled fid visible for ~1.5 polls
                live.echem_through_frame(k)
                live.finish(k)
                time.sleep(0.2)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test
            errors.append(exc)

    th = threading.Thread(target=writer)
    th.start()
    try:
        stdout, stderr = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
        th.join()
    assert not errors, errors
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    lines = [json.loads(s) for s in stdout.splitlines() if s.strip()]
    assert lines == helpers.read_events(events)
    ev = [e for e in lines if e.get("event") == "frame"]
    ref = label_reference(live.nmr, live.mpt, tiny_bundle, tmp_path / "ref.csv")
    assert_same_as_label(ev, ref)
    assert len(ev) == len(live.sim.raws)


def test_bad_frames_in_a_live_run_are_reported_and_skipped(live_run, tiny_bundle, tmp_path,
                                                           helpers):
    """Truncated fid, wrong nucleus, missing acqus: one stderr line naming the file, a
    ``skipped`` event, and the run goes on. A hole in the potential log: the frame is still
    labelled (on the spectrum alone, status ``echem_gap``) with one note naming the log."""
    live = live_run
    raws = live.sim.raws
    # expno 6 has a hole in the potentiostat log (no row inside its window: frames are back to back)
    # (ending 2 log periods before the frame ends, so the gap never reaches into frame 7)
    live.echem_holes.append((raws[5].acq_start.timestamp() + 5, raws[5].acq_end.timestamp() - 65))
    events = tmp_path / "ev.jsonl"
    # no grace for files still arriving: here a lost file is lost (see the test below)
    w, out, logs = make_watcher(live, tiny_bundle, events, arrival_grace_s=0.0)
    bad = {}
    for k in range(len(raws)):
        live.frame(k)
        d = live.expdir(k)
        if k == 2:                                   # truncated fid (copy cut short)
            data = (d / "fid").read_bytes()
            (d / "fid").write_bytes(data[: len(data) // 3])
            bad[3] = d / "fid"
        elif k == 3:                                 # another nucleus
            t = (d / "acqus").read_text(encoding="latin-1")
            assert "##$NUC1= <7Li>" in t
            (d / "acqus").write_text(t.replace("##$NUC1= <7Li>", "##$NUC1= <1H>"),
                                     encoding="latin-1")
            bad[4] = d / "acqus"
        elif k == 4:                                 # acqus lost
            (d / "acqus").unlink()
            bad[5] = d / "acqus"
        n_logs = len(logs)
        assert w.poll_once() == 1                    # every frame is handled, bad or not
        new = logs[n_logs:]
        expno = raws[k].expno
        if expno in bad:
            assert len(new) == 1 and "\n" not in new[0]
            assert new[0].startswith("skipped: ") and str(bad[expno].parent) in new[0]
        elif expno == 6:
            # the log's own note (the gap, said once) and the frame's
            assert len(new) == 2 and all(str(live.mpt) in m for m in new)
            assert "gap" in new[0] and "echem_gap" in new[1]
        else:
            assert new == []
    evs = helpers.read_events(events)
    skipped = {e["frame"]: e for e in evs if e.get("event") == "skipped"}
    assert sorted(skipped) == [3, 4, 5]
    assert "1H" in skipped[4]["reason"] and "7Li" in skipped[4]["reason"]
    assert skipped[5]["path"].endswith("acqus") and "missing" in skipped[5]["reason"]
    assert Path(skipped[3]["path"]).parent == live.expdir(2)
    frames = [e for e in evs if e.get("event") == "frame"]
    assert [e["frame"] for e in frames] == [1, 2, 6, 7, 8, 9, 10]
    f6 = frames[2]
    assert f6["status"] == "echem_gap" and f6["potential_V"] is None
    assert all(e["status"] == "ok" for e in frames if e["frame"] != 6)
    # label on the same (finished) run agrees row for row and lists the same skipped frames
    ref = label_reference(live.nmr, live.mpt, tiny_bundle, tmp_path / "ref.csv")
    assert_same_as_label(frames, ref)
    sk = pd.read_csv(tmp_path / "ref.skipped.csv")
    assert sk["frame"].tolist() == [3, 4, 5]


def test_a_frame_whose_files_are_still_arriving_is_waited_for(live_run, tiny_bundle, tmp_path):
    """A mirror (rsync copies alphabetically) brings ``audita.txt`` before ``fid``, and a
    ``cp -r`` may bring ``fid`` before ``acqus``: the frame is waited for, not skipped for good;
    a file that never comes is skipped once the folder has been quiet for ``arrival_grace_s``."""
    import shutil
    import time as _time
    live = live_run
    events = tmp_path / "ev.jsonl"
    w, out, logs = make_watcher(live, tiny_bundle, events, arrival_grace_s=0.5)
    live.frame(0)
    assert w.poll_once() == 1
    live.frame(1)
    d = live.expdir(1)
    held = tmp_path / "held"
    held.mkdir()
    shutil.move(str(d / "fid"), held / "fid")          # audita.txt there, fid not yet
    assert w.poll_once() == 0 and not any(m.startswith("skipped") for m in logs)
    shutil.move(str(held / "fid"), d / "fid")
    assert w.poll_once() == 1                            # labelled once it arrived
    live.frame(2)
    d = live.expdir(2)
    shutil.move(str(d / "acqus"), held / "acqus")      # acqus not yet (cp -r order)
    assert w.poll_once() == 0
    _time.sleep(0.6)                                     # ... and it never comes
    assert w.poll_once() == 1
    assert any(m.startswith("skipped") and "acqus: missing" in m for m in logs)
    w.events.close()
    frames = [json.loads(s) for s in events.read_text().splitlines()]
    assert [(e.get("event"), e["frame"]) for e in frames] == [
        ("frame", live.sim.raws[0].expno), ("frame", live.sim.raws[1].expno),
        ("skipped", live.sim.raws[2].expno)]
