"""``watch --echem LIVE.mpr``: following the binary file EC-Lab writes during a run.

How EC-Lab writes a ``.mpr`` during a run (galvani PR #102, echemdata/galvani; our real files
agree with the layout): the file holds the settings module and the data module, whose record
count and module length are updated in place as records are appended at the end. The LOG
module (with the acquisition timestamp) and the loop module are kept in side files (``.mpl``,
``_LOOP.txt``) and only appended to the ``.mpr`` when the experiment stops. So a live
``.mpr`` has no absolute start: ``--echem-start`` is needed until the run ends.

No ``.mpr`` writer exists (the format is proprietary and undocumented), so the growing file is
built here from a real EC-Lab GCPL ``.mpr`` in ``../shared/real``: its settings module and
data-module header (column set) byte for byte, records of the simulated run in its record
layout, the header counts patched in place as EC-Lab does, and at the end its LOG module with
the timestamp set to the simulated start. The template has no current column (GCPL recorded
without ``I``), so currents are NaN, as with the real file.
"""
from __future__ import annotations

import io
import os
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from lisentry.datasets.loading import LoadOptions
from lisentry.detector.cli import app
from lisentry.detector.watch import WatchConfig, Watcher
from lisentry.models.bundle import load_bundle

galvani = pytest.importorskip("galvani", reason="galvani not installed (pip install 'lisentry[mpr]')")
from galvani import BioLogic  # noqa: E402

REAL = Path(__file__).resolve().parents[3] / "shared" / "real" / "li_li_tegdme_operando" / "echem"
_HDR = BioLogic.VMPmodule_hdr_v1          # the template's module header layout (EC-Lab < 11.50)
_OLE_EPOCH = datetime(1899, 12, 30, tzinfo=timezone.utc)


def _template() -> Path:
    found = sorted(REAL.glob("*_01_GCPL_C05.mpr")) if REAL.is_dir() else []
    if not found:
        if os.environ.get("CI") == "true":
            pytest.fail(f"real EC-Lab .mpr template missing under {REAL} (required under CI)")
        pytest.skip(f"real EC-Lab .mpr template not available ({REAL})")
    return found[0]


class GrowingMpr:
    """Writes a ``.mpr`` record by record the way EC-Lab does during a run (see module doc)."""

    def __init__(self, template: Path, path: Path, start_utc: datetime):
        raw = template.read_bytes()
        n_magic = len(BioLogic.MPR_MAGIC)
        self.magic = raw[:n_magic]
        self.modules = {}
        pos = n_magic
        while pos < len(raw):
            assert raw[pos:pos + 6] == b"MODULE"
            hdr = np.frombuffer(raw[pos + 6:pos + 6 + _HDR.itemsize], dtype=_HDR)[0]
            end = pos + 6 + _HDR.itemsize + int(hdr["length"])
            self.modules[bytes(hdr["shortname"])] = bytearray(raw[pos:end])
            pos = end
        data = self.modules[b"VMP data  "]
        body = 6 + _HDR.itemsize
        self.version = int(np.frombuffer(bytes(data[body - 12:body - 8]), "<u4")[0])
        assert self.version == 3, "template data module is not version 3"
        n_cols = data[body + 4]
        cols = np.frombuffer(bytes(data[body + 5:body + 5 + 2 * n_cols]), "<u2")
        self.dtype, _ = BioLogic.VMPdata_dtype_from_colIDs(cols)
        self.data_head = bytes(data[:body + 406])          # header + column block, 0 records
        self.path = Path(path)
        self.start = start_utc
        day = start_utc.strftime("%m/%d/%y").encode()        # module header dates: the run's
        for mod in self.modules.values():
            mod[6 + 43:6 + 51] = day
        self.n = 0
        self._length_at = None
        self._count_at = None

    def append(self, t_s: np.ndarray, potential_V: np.ndarray) -> None:
        """Append records (time/s from the start, Ewe/V), then update the counts in place."""
        rec = np.zeros(len(t_s), dtype=self.dtype)
        rec["time/s"] = t_s
        rec["Ewe/V"] = potential_V
        if not self.path.exists():
            head = bytearray(self.data_head)
            head[6 + 35:6 + 39] = np.array([406], "<u4").tobytes()     # module length
            head[6 + _HDR.itemsize:6 + _HDR.itemsize + 4] = b"\0\0\0\0"  # n_data_points
            with open(self.path, "wb") as fh:
                fh.write(self.magic + bytes(self.modules[b"VMP Set   "]))
                start = fh.tell()
                fh.write(head)
            self._length_at = start + 6 + 35
            self._count_at = start + 6 + _HDR.itemsize
        with open(self.path, "r+b") as fh:                  # records first, counts after
            fh.seek(0, os.SEEK_END)
            fh.write(rec.tobytes())
            fh.flush()
            self.n += len(rec)
            fh.seek(self._count_at)
            fh.write(np.array([self.n], "<u4").tobytes())
            fh.seek(self._length_at)
            fh.write(np.array([406 + self.n * self.dtype.itemsize], "<u4").tobytes())

    def finish(self) -> None:
        """The experiment stops: EC-Lab appends the LOG module (acquisition timestamp)."""
        log = bytearray(self.modules[b"VMP LOG   "])
        body = 6 + _HDR.itemsize
        ole = (self.start - _OLE_EPOCH).total_seconds() / 86400.0
        log[body + 585:body + 593] = np.array([ole], "<f8").tobytes()
        with open(self.path, "ab") as fh:
            fh.write(bytes(log))


class MprLiveRun:
    """A simulated run: TopSpin experiments (conftest's LiveRun) + a growing ``.mpr``."""

    def __init__(self, helpers, sim, root: Path):
        self.live = helpers.LiveRun(sim, root, topspin="4.3")
        self.sim = sim
        e = sim.echem
        self.t0 = float(e.t_utc_s[0])
        self.start = datetime.fromtimestamp(self.t0, timezone.utc)
        self.mpr = GrowingMpr(_template(), root / "echem" / f"{sim.run_id}.mpr", self.start)
        self.written_to = -np.inf

    def echem_until(self, t_utc_s: float) -> None:
        e = self.sim.echem
        sel = (e.t_utc_s > self.written_to) & (e.t_utc_s <= t_utc_s)
        if sel.any():
            self.mpr.append(e.t_utc_s[sel] - self.t0, e.potential_V[sel])
            self.written_to = float(e.t_utc_s[sel][-1])

    def frame(self, k: int) -> None:
        raw = self.sim.raws[k]
        self.live.begin(k)
        self.echem_until(raw.acq_end.timestamp() + 60.0)
        self.live.finish(k)


def make_watcher(run: MprLiveRun, bundle_path, events: Path, start: str | None):
    out, logs = io.StringIO(), []
    opts = LoadOptions(echem=run.mpr.path, echem_start=start, echem_tz="UTC")
    w = Watcher(run.live.nmr, opts, load_bundle(bundle_path), events, None, None,
                WatchConfig(poll_s=0.01, echem_grace_s=3600.0, fs_events="off"),
                stdout=out, log=logs.append)
    return w, logs


def expected_potential(sim, raw) -> float:
    e = sim.echem
    tt = np.linspace(raw.acq_start.timestamp(), raw.acq_end.timestamp(), 4001)
    return float(np.interp(tt, e.t_utc_s, e.potential_V).mean())


def test_template_round_trip(tmp_path, sim_run):
    """The builder gives files galvani reads as EC-Lab's: counts, values, timestamp."""
    g = GrowingMpr(_template(), tmp_path / "x.mpr", datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone.utc))
    g.append(np.array([0.0, 10.0]), np.array([0.1, 0.2]))
    g.append(np.array([20.0]), np.array([0.3]))
    m = BioLogic.MPRfile(str(g.path))
    np.testing.assert_allclose(m.data["time/s"], [0, 10, 20])
    np.testing.assert_allclose(m.data["Ewe/V"], [0.1, 0.2, 0.3], rtol=1e-6)
    assert getattr(m, "timestamp", None) is None              # live: no LOG module yet
    g.finish()
    m = BioLogic.MPRfile(str(g.path))
    assert abs((m.timestamp - datetime(2025, 1, 2, 3, 4, 5)).total_seconds()) < 1e-3


def test_watch_follows_growing_mpr_with_echem_start(sim_run, tiny_bundle, tmp_path, helpers):
    run = MprLiveRun(helpers, sim_run, tmp_path / "run")
    events = tmp_path / "ev.jsonl"
    w, logs = make_watcher(run, tiny_bundle, events, start=run.start.isoformat())
    raws = sim_run.raws
    for k in range(len(raws)):
        run.live.begin(k)
        assert w.poll_once() == 0
        if k > 0:
            run.echem_until(raws[k].acq_start.timestamp())    # log short of the frame's end
        run.live.finish(k)
        if k > 0:
            assert w.poll_once() == 0, f"frame {k + 1} emitted before the .mpr covered it"
        run.echem_until(raws[k].acq_end.timestamp() + 60.0)
        assert w.poll_once() == 1
    run.mpr.finish()                                          # EC-Lab stops: LOG appended
    w.events.close()
    ev = helpers.frame_events(events)
    assert [e["frame"] for e in ev] == [r.expno for r in raws]
    for e, raw in zip(ev, raws):
        assert e["potential_V"] == pytest.approx(expected_potential(sim_run, raw), abs=1e-4)
        assert e["current_A"] is None                         # no I column in a GCPL file
    assert not [e for e in helpers.read_events(events) if e.get("event") == "skipped"]
    # the finished .mpr (now with its LOG timestamp) labels the run the same way
    ref_csv = tmp_path / "ref.csv"
    res = CliRunner().invoke(app, ["label", str(run.live.nmr), "--echem", str(run.mpr.path),
                                   "--echem-tz", "UTC", "--out", str(ref_csv),
                                   "--model", str(tiny_bundle)])
    assert res.exit_code == 0, res.output + res.stderr
    ref = pd.read_csv(ref_csv)
    assert [e["label"] for e in ev] == ref["label"].tolist()
    np.testing.assert_allclose([e["potential_V"] for e in ev], ref["potential_V"], atol=1e-6)
    p_cols = [c for c in ref.columns if c.startswith("p_")]
    np.testing.assert_allclose([[e[c] for c in p_cols] for e in ev], ref[p_cols], atol=1e-5)


def test_record_appended_before_counts_updated_is_not_a_problem(sim_run, tiny_bundle, tmp_path,
                                                               helpers):
    """A poll between EC-Lab's record write and its count update sees a file galvani refuses:
    the follower keeps the previous data and picks the new rows up at the next poll."""
    run = MprLiveRun(helpers, sim_run, tmp_path / "run")
    events = tmp_path / "ev.jsonl"
    w, logs = make_watcher(run, tiny_bundle, events, start=run.start.isoformat())
    run.frame(0)
    assert w.poll_once() == 1
    raw = sim_run.raws[1]
    run.live.begin(1)
    run.live.finish(1)
    # half a record more at the end, counts not yet updated
    with open(run.mpr.path, "ab") as fh:
        fh.write(b"\0" * (run.mpr.dtype.itemsize // 2))
    assert w.poll_once() == 0
    with open(run.mpr.path, "r+b") as fh:                   # EC-Lab completes the update
        fh.truncate(os.path.getsize(run.mpr.path) - run.mpr.dtype.itemsize // 2)
    run.echem_until(raw.acq_end.timestamp() + 60.0)
    assert w.poll_once() == 1
    ev = helpers.frame_events(events)
    assert ev[1]["potential_V"] == pytest.approx(expected_potential(sim_run, raw), abs=1e-4)


def test_live_mpr_without_start_says_what_to_do_then_uses_the_final_timestamp(
        sim_run, tiny_bundle, tmp_path, helpers):
    """Without --echem-start a live .mpr has no absolute time: watch says once, naming the file
    and --echem-start, and waits (within the grace period); when EC-Lab appends the LOG module
    the frames get their potentials."""
    run = MprLiveRun(helpers, sim_run, tmp_path / "run")
    events = tmp_path / "ev.jsonl"
    w, logs = make_watcher(run, tiny_bundle, events, start=None)
    run.frame(0)
    run.frame(1)
    assert w.poll_once() == 0 and w.poll_once() == 0
    notes = [m for m in logs if str(run.mpr.path) in m]
    assert len(notes) == 1, logs
    assert "--echem-start" in notes[0] and "LOG" in notes[0] and "\n" not in notes[0]
    run.mpr.finish()
    assert w.poll_once() == 2
    ev = helpers.frame_events(events)
    for e, raw in zip(ev, sim_run.raws[:2]):
        assert e["potential_V"] == pytest.approx(expected_potential(sim_run, raw), abs=1e-4)
