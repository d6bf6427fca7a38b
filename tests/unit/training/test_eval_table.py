"""benchmarks/eval_table.py: saved evaluations side by side, per-run and frame-pooled macro-F1."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[3] / "benchmarks" / "eval_table.py"
_spec = importlib.util.spec_from_file_location("eval_table", _PATH)
et = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(et)


def _overall(per_run: float, f1s: dict) -> dict:
    return {"n_runs": 3, "macro_f1_mean": per_run, "per_class_f1": f1s,
            "plating": {"delay_s": {"median": 600.0}, "n_detected": 2, "n_runs_with_onset": 3},
            "short": {"n_detected": 1, "n_runs_with_short": 1},
            "false_alarms": {"per_100h": 0.5}}


def test_pooled_macro_f1_skips_absent_classes_and_reads_compare_files(tmp_path, capsys):
    ev = tmp_path / "eval.json"
    ev.write_text(json.dumps({"overall": _overall(0.8, {"a": 1.0, "b": 0.5, "c": None})}))
    cmp_ = tmp_path / "cmp.json"
    cmp_.write_text(json.dumps({"methods": {"features_hgb": {"eval": {"heldout": {
        "overall": _overall(0.9, {"a": 0.9, "b": 0.7})}}}}}))
    assert et.pooled_macro_f1(et.overall_of(str(ev))) == pytest.approx(0.75)
    assert et.pooled_macro_f1(et.overall_of(f"{cmp_}:features_hgb:heldout")) == pytest.approx(0.8)
    assert et.main([f"mine={ev}", f"hgb={cmp_}:features_hgb:heldout"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1].split() == ["mine", "3", "0.800", "0.750", "10.0", "2/3", "1/1", "0.50"]
    assert out[2].split()[:4] == ["hgb", "3", "0.900", "0.800"]
    with pytest.raises(SystemExit, match="no method 'rules' with set 'heldout'"):
        et.overall_of(f"{cmp_}:rules:heldout")
    with pytest.raises(SystemExit, match="cannot read"):
        et.overall_of(str(tmp_path / "missing.json"))
    assert et.main(["no-equals-sign"]) == 2
