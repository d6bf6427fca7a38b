"""Labels tables, sidecars and the append-only event log."""
from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lisentry.datasets.errors import ConfigError, InputError
from lisentry.detector import outputs
from lisentry.detector.outputs import (LABEL_COLUMNS, EventLog, EventLogError, output_stem,
                                       write_labels_atomic, write_provenance, write_skipped)

# The columns as written in shared/interfaces.md, "Output columns".
SPEC_COLUMNS = ("frame, timestamp, t_s, label, p_normal_lithiation, p_cluster_growth, "
                "p_plating_onset, p_imminent_short, potential_V, current_A, ood_score, "
                "cluster_amount, cluster_shift_ppm, metal_amount, ce_amount, status").split(", ")


def make_rows(n=3):
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        p = rng.dirichlet([1, 1, 1, 1])
        rows.append({
            "frame": i + 2, "timestamp": f"2024-05-01T10:{i:02d}:30+00:00",
            "t_s": 300.0 * i + 1 / 3,
            "label": "normal_lithiation", "p_normal_lithiation": p[0], "p_cluster_growth": p[1],
            "p_plating_onset": p[2], "p_imminent_short": p[3],
            "potential_V": math.nan if i == 1 else 0.0123 * (i + 1), "current_A": -1e-4,
            "ood_score": 1.5, "cluster_amount": 0.0, "cluster_shift_ppm": math.nan,
            "metal_amount": 0.01, "ce_amount": 0.98, "status": "no_potential" if i == 1 else "ok"})
    return rows


def test_label_columns_match_interfaces():
    assert list(LABEL_COLUMNS) == SPEC_COLUMNS


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_labels_round_trip(tmp_path, suffix):
    rows = make_rows()
    # extra column and scrambled order: fixed columns come first, extras after
    df_in = pd.DataFrame(rows)[list(reversed(SPEC_COLUMNS))].assign(run_id="r1")
    out = write_labels_atomic(tmp_path / f"labels{suffix}", df_in)
    back = pd.read_csv(out, keep_default_na=False, na_values=[""]) if suffix == ".csv" \
        else pd.read_parquet(out)
    assert list(back.columns) == SPEC_COLUMNS + ["run_id"]
    for i, r in enumerate(rows):
        for c in SPEC_COLUMNS:
            v = back[c].iloc[i]
            if isinstance(r[c], float) and math.isnan(r[c]):
                assert pd.isna(v), c
            else:
                assert v == r[c], (c, v, r[c])      # floats round-trip exactly
    assert [p.name for p in tmp_path.iterdir()] == [f"labels{suffix}"]


def test_csv_text_format(tmp_path):
    out = write_labels_atomic(tmp_path / "x.csv", make_rows(2))
    raw = out.read_bytes()
    assert b"\r\n" not in raw
    lines = raw.decode().splitlines()
    assert lines[0] == ",".join(SPEC_COLUMNS)
    fields = next(csv.DictReader([lines[0], lines[2]]))
    assert fields["potential_V"] == "" and fields["status"] == "no_potential"


def test_empty_rows_give_header_only(tmp_path):
    out = write_labels_atomic(tmp_path / "e.csv", [])
    assert out.read_text().strip() == ",".join(SPEC_COLUMNS)


def test_labels_validation(tmp_path):
    rows = make_rows(1)
    del rows[0]["ood_score"]
    with pytest.raises(ConfigError, match="ood_score"):
        write_labels_atomic(tmp_path / "a.csv", rows)
    with pytest.raises(ConfigError, match="a.xlsx"):
        write_labels_atomic(tmp_path / "a.xlsx", make_rows(1))
    with pytest.raises(InputError, match="does not exist"):
        write_labels_atomic(tmp_path / "nope" / "a.csv", make_rows(1))


def test_crash_mid_write_keeps_old_file(tmp_path, monkeypatch):
    target = tmp_path / "labels.csv"
    write_labels_atomic(target, make_rows(2))
    before = target.read_bytes()

    def torn(fh, data):
        fh.write(data[: len(data) // 2])
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(outputs, "_write_and_sync", torn)
    with pytest.raises(KeyboardInterrupt):
        write_labels_atomic(target, make_rows(5))
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["labels.csv"]     # no temp file left


def test_skipped_and_provenance(tmp_path):
    out = tmp_path / "run7.csv"
    sk = write_skipped(out, [(4, Path("run7/4"), "fid missing\n(acquisition aborted)"),
                             {"frame": 9, "path": "run7/9", "reason": "acqus: SW_h missing"}])
    assert sk == tmp_path / "run7.skipped.csv"
    with open(sk, newline="") as fh:
        recs = list(csv.DictReader(fh))
    assert recs == [{"frame": "4", "path": str(Path("run7/4")),
                     "reason": "fid missing (acquisition aborted)"},
                    {"frame": "9", "path": "run7/9", "reason": "acqus: SW_h missing"}]
    empty = write_skipped(tmp_path / "other", [])
    assert empty.read_text().strip() == "frame,path,reason"

    prov = write_provenance(out, {"H_min": 60.0, "bad": float("nan"), "inputs": [Path("a/b")],
                                  "n": np.int64(3)})
    assert prov == tmp_path / "run7.json"

    def no_nan(token):
        raise AssertionError(f"non-standard JSON token {token}")
    doc = json.loads(prov.read_text(), parse_constant=no_nan)
    assert doc == {"H_min": 60.0, "bad": None, "inputs": [str(Path("a/b"))], "n": 3}


def test_output_stem():
    assert output_stem("a/run.1") == Path("a/run.1")
    assert output_stem("a/run.1.parquet") == Path("a/run.1")


# -- EventLog ----------------------------------------------------------------------------
def test_eventlog_append_and_reopen(tmp_path):
    p = tmp_path / "events.jsonl"
    with EventLog(p) as log:
        log.append({"frame": np.int64(3), "label": "normal_lithiation", "t_s": math.nan})
        log.append({"event": "alarm", "frame": 3, "alarm": "plating_onset"})
        log.append({"frame": 4, "p": [np.float32(0.5), math.inf]})
    lines = p.read_text().splitlines()
    assert [json.loads(x) for x in lines] == [
        {"frame": 3, "label": "normal_lithiation", "t_s": None},
        {"event": "alarm", "frame": 3, "alarm": "plating_onset"},
        {"frame": 4, "p": [0.5, None]}]
    log = EventLog(p)
    assert log.n_events == 3 and log.torn_bytes == 0
    assert log.already_logged(3) and log.already_logged(np.int32(4)) and not log.already_logged(5)
    assert log.already_logged(3, event="alarm") and not log.already_logged(4, event="alarm")
    assert log.logged_keys == [3, 4]
    log.append({"frame": 5})
    log.close()
    assert len(p.read_text().splitlines()) == 4
    with pytest.raises(EventLogError, match="closed"):
        log.append({"frame": 6})


def test_eventlog_unserialisable_event_writes_nothing(tmp_path):
    p = tmp_path / "e.jsonl"
    with EventLog(p) as log:
        with pytest.raises(TypeError):
            log.append({"frame": 1, "obj": object()})
    assert p.read_bytes() == b""


@pytest.mark.parametrize("tail", [b'{"frame": 3, "lab', b"\x00\x00\x00\x00", b'{"frame": 3}'])
def test_eventlog_torn_last_line_is_cut_and_reported(tmp_path, capsys, tail):
    p = tmp_path / "e.jsonl"
    good = b'{"frame": 1}\n{"frame": 2}\n'
    p.write_bytes(good + tail)
    log = EventLog(p)
    err = capsys.readouterr().err
    assert "torn last line" in err and str(p) in err and len(err.strip().splitlines()) == 1
    assert log.torn_bytes == len(tail)
    assert p.read_bytes() == good
    assert log.already_logged(2) and not log.already_logged(3)
    log.append({"frame": 3})
    log.close()
    assert [json.loads(x)["frame"] for x in p.read_text().splitlines()] == [1, 2, 3]


def test_eventlog_corrupt_middle_line_raises(tmp_path):
    p = tmp_path / "e.jsonl"
    p.write_text('{"frame": 1}\n{"frame": \n{"frame": 3}\n')
    with pytest.raises(EventLogError, match=r"e\.jsonl: line 2 is not valid JSON"):
        EventLog(p)
    p.write_text('{"frame": 1}\n[1, 2]\n')
    with pytest.raises(EventLogError, match="line 2 is not a JSON object"):
        EventLog(p)


_WRITER = textwrap.dedent("""
    import sys
    from lisentry.detector.outputs import EventLog
    log = EventLog(sys.argv[1])
    i = 0
    while True:
        if not log.already_logged(i):
            log.append({"frame": i, "label": "normal_lithiation", "pad": "x" * 500})
        i += 1
""")


@pytest.mark.skipif(os.name == "nt", reason="SIGKILL is POSIX")
def test_eventlog_survives_sigkill_and_restart(tmp_path):
    p = tmp_path / "events.jsonl"
    for _round in range(2):
        proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(p)])
        try:
            start_n = len(p.read_bytes().splitlines()) if p.exists() else 0
            for _ in range(400):          # wait (at most ~20 s) until it has written more lines
                time.sleep(0.05)
                if p.exists() and len(p.read_bytes().splitlines()) >= start_n + 30:
                    break
        finally:
            proc.kill()                   # SIGKILL, of the process this test started
            proc.wait()
    log = EventLog(p)
    frames = [json.loads(x)["frame"] for x in p.read_text().splitlines()]
    assert frames == list(range(len(frames)))           # no frame dropped, none repeated
    assert len(frames) >= 60 and log.n_events == len(frames)


def test_eventlog_one_writer_at_a_time(tmp_path):
    """A second watcher on the same events file would write every frame twice."""
    p = tmp_path / "events.jsonl"
    first = EventLog(p)
    with pytest.raises(EventLogError, match="another process is writing it"):
        EventLog(p)
    # the refused opener changed nothing; the first writer goes on
    first.append({"frame": 1})
    first.close()
    with EventLog(p) as again:      # released on close
        assert again.already_logged(1)
    # and released when the holder dies without closing (kill -9)
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
        import sys, time
        from lisentry.detector.outputs import EventLog
        log = EventLog(sys.argv[1]); print("locked", flush=True); time.sleep(60)
    """), str(p)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(EventLogError, match="another process"):
            EventLog(p)
    finally:
        proc.kill()
        proc.wait()
    EventLog(p).close()
