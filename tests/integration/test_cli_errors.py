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


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    from lisentry.datasets.sim.run import simulate_run, write_run
    root = tmp_path_factory.mktemp("small") / "run"
    nmr, mpt = write_run(simulate_run("hc_liquid", 2, max_frames=3), root)
    return nmr


@pytest.mark.parametrize("args,needle", [
    (("-o", "{tmp}/x.txt"), "figure format"),
    (("-o", "{tmp}/x.png", "--ppm-min", 500, "--ppm-max", 600), "outside the spectra's ppm grid"),
    (("-o", "{tmp}/x.png", "--ppm-min", 300, "--ppm-max", 0), "--ppm-min must be below"),
    (("-o", "{tmp}/x.png", "--clock-offset-s", "nan"), "--clock-offset-s must be a finite"),
    (("-o", "{tmp}/x.png", "--clock-offset-s", "inf"), "--clock-offset-s must be a finite"),
])
def test_plot_bad_options_are_one_line(small_run, tmp_path, args, needle):
    args = [str(a).format(tmp=tmp_path) for a in args]
    res = invoke("plot", small_run, *args)
    _one_line_error(res, needle)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("line,needle", [
    ("families: {hc_liquid: one}", "families.hc_liquid must be a run count"),
    ("seed: abc\nfamilies: {hc_liquid: 1}", "seed must be an int"),
    ("max_frames: -2\nfamilies: {hc_liquid: 1}", "max_frames must be an int >= 1"),
    ("randomize: 'no'\nfamilies: {hc_liquid: 1}", "randomize must be true or false"),
    ("horizon_s: -5\nfamilies: {hc_liquid: 1}", "horizon_s must be a number > 0"),
    ("families: {li_llzo_li: {runs: 1, randomize_override: 3}}",
     "families.li_llzo_li.randomize_override must be a mapping"),
    ("- a list", "mapping"),
])
def test_build_config_wrong_types_are_one_line(tmp_path, line, needle):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(line + "\n")
    res = invoke("datasets", "build", cfg, "--out", tmp_path / "ds", "--workers", 1)
    _one_line_error(res, needle, str(cfg))
    assert not (tmp_path / "ds").exists()
