"""Command-line misuse is one line (``error: ...``), never a traceback, and creates nothing."""
from __future__ import annotations

import pytest
from typer.testing import CliRunner


def invoke(*args):
    from lisentry.detector.cli import app
    return CliRunner().invoke(app, [str(a) for a in args])


def _one_line_error(res, *needles):
    assert res.exit_code != 0
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    out = res.output.strip()
    assert "Traceback" not in out and len(out.splitlines()) == 1, out
    for n in needles:
        assert n in out, out


def test_simulate_refuses_a_non_empty_folder_unless_forced(tmp_path):
    out = tmp_path / "run"
    res = invoke("datasets", "simulate", "hc_liquid", out, "--max-frames", 3)
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (out / "nmr").iterdir()) == ["1", "2", "3"]
    res = invoke("datasets", "simulate", "hc_liquid", out, "--max-frames", 2, "--seed", 5)
    _one_line_error(res, str(out), "--force")
    assert sorted(p.name for p in (out / "nmr").iterdir()) == ["1", "2", "3"]
    res = invoke("datasets", "simulate", "hc_liquid", out, "--max-frames", 2, "--seed", 5, "--force")
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (out / "nmr").iterdir()) == ["1", "2"]
    assert [p.name for p in (out / "echem").iterdir()] == ["hc_liquid-5.mpt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


@pytest.mark.parametrize("args,needle", [
    (("--layout", "foo"), "--layout"), (("--max-frames", -3), "--max-frames"),
    (("--max-frames", 0), "--max-frames"),
])
def test_simulate_bad_options_create_nothing(tmp_path, args, needle):
    res = invoke("datasets", "simulate", "hc_liquid", tmp_path / "new", *args)
    _one_line_error(res, needle)
    assert not (tmp_path / "new").exists()


def test_simulated_ser_has_procs(tmp_path):
    from lisentry.datasets.io.bruker import read_ser
    from lisentry.datasets.sim.run import simulate_run, write_run
    sim = simulate_run("hc_liquid", 1, max_frames=3)
    nmr, _ = write_run(sim, tmp_path / "run", layout="ser")
    rows = read_ser(nmr / "1")
    assert rows[0].acq.sr_Hz is not None
    assert abs(rows[0].acq.sr_Hz - sim.raws[0].acq.sr_Hz) < 0.01
    assert rows[0].phase_deg == pytest.approx(sim.raws[0].phase_deg)
