"""``lisentry inspect`` and ``lisentry plot`` end to end, on a written run with problems and on
the real Li|Li run (skips when absent)."""
from __future__ import annotations

import re
import shutil

import pytest
from typer.testing import CliRunner

REAL_ECHEM = "jr862_11_08_23_insitu-impedance-LiLi_1MLiTFSI_TEGDME-1mA_03_GCPL_C05.txt"


def invoke(*args):
    from lisentry.detector.cli import app
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def messy_run(tmp_path_factory):
    """6 frames written; folder 3 emptied (mid-run), folder 5's fid truncated, an empty
    trailing folder 7 (acquisition about to start) and a stray file."""
    from lisentry.datasets.sim.run import simulate_run, write_run
    root = tmp_path_factory.mktemp("messy") / "run"
    sim = simulate_run("hc_sulfide_overlithiation", 3, max_frames=6)
    nmr, mpt = write_run(sim, root)
    shutil.rmtree(nmr / "3")
    (nmr / "3").mkdir()
    fid = nmr / "5" / "fid"
    fid.write_bytes(fid.read_bytes()[:2048])
    (nmr / "7").mkdir()
    (nmr / "notes.txt").write_text("stray file, not an experiment\n")
    return sim, nmr, mpt


def test_inspect_counts_folders_frames_skipped(messy_run):
    sim, nmr, mpt = messy_run
    res = invoke("inspect", nmr, "--echem", mpt, "--echem-tz", "UTC")
    assert res.exit_code == 0, res.stderr
    # by hand: folders 1..7 (notes.txt is not one); read 1, 2, 4, 6; skipped 3 (empty, a later
    # frame exists) and 5 (truncated); 7 is the acquisition about to start, not skipped.
    assert "7 folders, 4 frames read, 2 skipped" in res.stdout.splitlines()
    assert re.search(r"skipped frame 3: .*/3: ", res.stdout)
    assert re.search(r"skipped frame 5: .*/5/fid: ", res.stdout)
    m = re.search(r"potential: (-?[\d.]+) \.\. (-?[\d.]+) V over 4 frames", res.stdout)
    assert m, res.stdout
    e = sim.echem
    lo, hi = float(m.group(1)), float(m.group(2))
    # the window averages lie within the log's range over the run
    t0, t1 = sim.raws[0].acq_start.timestamp(), sim.raws[-1].acq_end.timestamp()
    sel = (e.t_utc_s >= t0 - 30) & (e.t_utc_s <= t1 + 30)
    assert e.potential_V[sel].min() - 1e-4 <= lo <= hi <= e.potential_V[sel].max() + 1e-4
    assert "nucleus: 7Li" in res.stdout


def test_plot_writes_png(messy_run, tmp_path):
    sim, nmr, mpt = messy_run
    out = tmp_path / "fig.png"
    res = invoke("plot", nmr, "-o", out, "--echem", mpt, "--echem-tz", "UTC")
    assert res.exit_code == 0, res.stderr
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert "4 frames, 2 skipped" in res.stderr


@pytest.mark.parametrize("cmd", [["inspect"], ["plot", "-o", "x.png"]])
def test_bad_path_one_line_error(tmp_path, cmd):
    missing = tmp_path / "no_such_run"
    res = invoke(cmd[0], missing, *cmd[1:])
    assert res.exit_code != 0
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and str(missing) in lines[0], res.stderr
    assert "Traceback" not in res.stderr + res.stdout
    assert isinstance(res.exception, SystemExit)        # not an uncaught exception


def test_inspect_bad_echem_one_line_error(messy_run, tmp_path):
    sim, nmr, mpt = messy_run
    bad = tmp_path / "log.mpt"
    bad.write_bytes(b"\x00\x01garbage")
    res = invoke("inspect", nmr, "--echem", bad)
    assert res.exit_code != 0
    assert len(res.stderr.strip().splitlines()) == 1 and str(bad) in res.stderr
    assert isinstance(res.exception, SystemExit)


@pytest.mark.real
def test_inspect_real_run(real_run_dir):
    res = invoke("inspect", real_run_dir / "nmr", "--echem", real_run_dir / "echem" / REAL_ECHEM,
                 "--echem-start", "2023-08-11T12:40:15+01:00")
    assert res.exit_code == 0, res.stderr
    assert "600 folders, 600 frames read, 0 skipped" in res.stdout.splitlines()
    m = re.search(r"potential: (-?[\d.]+) \.\. (-?[\d.]+) V over (\d+) frames", res.stdout)
    assert m, res.stdout
    lo, hi, n = float(m.group(1)), float(m.group(2)), int(m.group(3))
    # window averages lie within the export's own range; the export covers ~45 of the 48.7 h
    import numpy as np
    v = np.loadtxt(real_run_dir / "echem" / REAL_ECHEM, skiprows=1)[:, 1]
    assert v.min() - 1e-6 <= lo < hi <= v.max() + 1e-6
    assert 500 < n <= 600, res.stdout
    assert re.search(r"nucleus: 7Li  SFO1 116\.70\d+ MHz", res.stdout), res.stdout
