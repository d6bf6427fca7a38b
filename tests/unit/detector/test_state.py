"""WatchState: round trip, fresh start, corrupt files, kill safety."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from lisentry.datasets.frame import CLASSES
from lisentry.detector import outputs
from lisentry.detector.hysteresis import AlarmPolicy, HysteresisLabeller
from lisentry.detector.state import STATE_VERSION, StateFileError, WatchState


def full_state(n=3) -> WatchState:
    h = HysteresisLabeller(AlarmPolicy(min_consecutive=1))
    h.update(dict(zip(CLASSES, [0.1, 0.1, 0.7, 0.1])))
    s = WatchState(
        t0=datetime(2024, 5, 1, 12, 0, tzinfo=timezone(timedelta(hours=2))),
        detector_state={"hysteresis": h.state_dict(), "temperature": 1.3, "nan": math.nan},
        detector_tensors={"gru_h": np.arange(8, dtype=np.float32).reshape(2, 4),
                          "count": np.array([5], dtype=np.int64)},
        pipeline_state={"phase_deg": [12.5, -3.0], "norm": 0.0421},
        pipeline_tensors={"reference": np.linspace(0, 1, 11)},
        echem_offsets={"cell.mpr": 123456, "log.txt": 88},
        extra={"note": "α"})
    for k in range(1, n + 1):
        s.mark_processed(k)
    s.mark_processed(("ser", 7))
    s.mark_processed(np.int64(2))       # duplicate: ignored
    return s


def test_missing_file_is_a_fresh_start(tmp_path):
    s = WatchState.load(tmp_path / "state.json")
    assert s == WatchState() and s.processed == [] and s.t0 is None
    assert s.version == STATE_VERSION


def test_round_trip(tmp_path):
    s = full_state()
    p = s.save(tmp_path / "state.json")
    back = WatchState.load(p)
    assert back == s
    assert back.processed == [1, 2, 3, ("ser", 7)]
    assert back.is_processed(np.int32(3)) and back.is_processed(("ser", 7))
    assert not back.is_processed(4)
    assert back.t0 == datetime(2024, 5, 1, 10, 0, tzinfo=timezone.utc)
    assert back.t0.utcoffset() == timedelta(0)
    np.testing.assert_array_equal(back.detector_tensors["gru_h"],
                                  np.arange(8, dtype=np.float32).reshape(2, 4))
    assert back.detector_tensors["count"].dtype == np.int64
    assert math.isnan(back.detector_state["nan"])
    assert back.echem_offsets == {"cell.mpr": 123456, "log.txt": 88}
    # the hysteresis state continues identically after the round trip
    h = HysteresisLabeller.from_state_dict(back.detector_state["hysteresis"])
    assert h.label == "plating_onset" and h.n_seen == 1
    # files: JSON + one hashed safetensors, no pickle, nothing else
    names = sorted(x.name for x in tmp_path.iterdir())
    assert names[0].startswith("state.") and names[0].endswith(".safetensors")
    assert names[1] == "state.json" and len(names) == 2
    doc = json.loads(p.read_text())
    assert doc["version"] == STATE_VERSION and doc["tensors_file"] == names[0]


def test_no_arrays_no_tensor_file_and_old_ones_cleaned(tmp_path):
    p = tmp_path / "state.json"
    full_state().save(p)
    s = full_state(5)
    s.detector_tensors["gru_h"] = np.ones((2, 4), np.float32)
    s.save(p)                                  # new hash; old arrays file removed
    assert len(list(tmp_path.glob("*.safetensors"))) == 1
    unrelated = tmp_path / "state.mine.safetensors"
    unrelated.write_bytes(b"user file")
    WatchState(processed=[1]).save(p)
    assert list(tmp_path.glob("state.*.safetensors")) == [unrelated]
    assert WatchState.load(p).processed == [1]


def test_not_json_safe_writes_nothing(tmp_path):
    p = tmp_path / "state.json"
    with pytest.raises(TypeError, match="detector_state.x"):
        WatchState(detector_state={"x": np.zeros(2)}).save(p)
    with pytest.raises(TypeError, match="numeric"):
        WatchState(pipeline_tensors={"s": np.array(["a"])}).save(p)
    assert list(tmp_path.iterdir()) == []


def _torn_write(fh, data):
    fh.write(data[: len(data) // 2])
    raise KeyboardInterrupt("killed mid-write")


def test_crash_mid_json_write_keeps_old_state(tmp_path, monkeypatch):
    p = tmp_path / "state.json"
    old = full_state(2)
    old.save(p)
    before = sorted((x.name, x.read_bytes()) for x in tmp_path.iterdir())
    new = full_state(9)
    new.detector_tensors = {}          # no arrays: the only write is the JSON
    monkeypatch.setattr(outputs, "_write_and_sync", _torn_write)
    with pytest.raises(KeyboardInterrupt):
        new.save(p)
    monkeypatch.undo()
    assert sorted((x.name, x.read_bytes()) for x in tmp_path.iterdir()) == before
    assert WatchState.load(p) == old


def test_crash_between_arrays_and_json_keeps_old_state(tmp_path, monkeypatch):
    p = tmp_path / "state.json"
    old = full_state(2)
    old.save(p)
    new = full_state(9)
    new.detector_tensors["gru_h"] = np.full((2, 4), 7, np.float32)
    real = outputs._write_and_sync
    calls = []

    def second_write_dies(fh, data):
        calls.append(len(data))
        if len(calls) == 2:            # 1st: new arrays file (complete), 2nd: the JSON
            _torn_write(fh, data)
        real(fh, data)

    monkeypatch.setattr(outputs, "_write_and_sync", second_write_dies)
    with pytest.raises(KeyboardInterrupt):
        new.save(p)
    monkeypatch.undo()
    assert WatchState.load(p) == old           # old JSON and the old arrays it names
    assert len(list(tmp_path.glob("state.*.safetensors"))) == 2   # orphan until next save
    new.save(p)
    assert WatchState.load(p) == new
    assert len(list(tmp_path.glob("state.*.safetensors"))) == 1


@pytest.mark.parametrize("content, msg", [
    ('{"format": "lisentry-watch-state", "version": 1, "proc', "corrupt state file"),
    ("", "corrupt state file"),
    ('{"hello": 1}', "not a lisentry watch state"),
    ('{"format": "lisentry-watch-state", "version": 99}', "newer than"),
    ('{"format": "lisentry-watch-state", "version": 1, "t0": "yesterday"}', "malformed"),
])
def test_corrupt_files_give_one_line_errors(tmp_path, content, msg):
    p = tmp_path / "state.json"
    p.write_text(content)
    with pytest.raises(StateFileError, match=msg) as ei:
        WatchState.load(p)
    text = str(ei.value)
    assert "\n" not in text and text.startswith(str(p))


def test_arrays_file_missing_or_tampered(tmp_path):
    p = tmp_path / "state.json"
    full_state().save(p)
    arrays = next(tmp_path.glob("state.*.safetensors"))
    blob = bytearray(arrays.read_bytes())
    blob[-1] ^= 0xFF
    arrays.write_bytes(bytes(blob))
    with pytest.raises(StateFileError, match="does not match the SHA-256"):
        WatchState.load(p)
    arrays.unlink()
    with pytest.raises(StateFileError, match="is missing"):
        WatchState.load(p)


_SAVER = textwrap.dedent("""
    import sys
    import numpy as np
    from lisentry.detector.state import WatchState
    path = sys.argv[1]
    s = WatchState.load(path)
    i = len(s.processed)
    while True:
        s.mark_processed(i)
        s.detector_tensors["h"] = np.full(64, i, dtype=np.float32)
        s.detector_state = {"last": i}
        s.save(path)
        i += 1
""")


@pytest.mark.skipif(os.name == "nt", reason="SIGKILL is POSIX")
def test_state_survives_sigkill(tmp_path):
    p = tmp_path / "state.json"
    proc = subprocess.Popen([sys.executable, "-c", _SAVER, str(p)])
    try:
        for _ in range(400):                   # wait (at most ~20 s) for some saves
            time.sleep(0.05)
            if p.exists():
                try:
                    if len(WatchState.load(p).processed) >= 20:
                        break
                except StateFileError:
                    pass                      # arrays file swapped between our two reads
    finally:
        proc.kill()                            # SIGKILL, of the process this test started
        proc.wait()
    s = WatchState.load(p)
    n = len(s.processed)
    assert n >= 20 and s.processed == list(range(n))
    assert s.detector_state == {"last": n - 1}
    np.testing.assert_array_equal(s.detector_tensors["h"], np.full(64, n - 1, np.float32))
    # a temp file may remain after SIGKILL; the next save removes it
    s.save(p)
    assert not list(tmp_path.glob(".*.tmp"))
