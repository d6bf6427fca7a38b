"""The real Li|Li run goes through `datasets add-measured` with the interval labels derived in
docs/real_run.md (skips when ../shared/real is absent; fails under CI=true)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from lisentry.datasets.build import add_measured, build_dataset
from lisentry.datasets.fingerprint import compare_sketches, sketch_dataset

REPO = Path(__file__).resolve().parents[2]


def test_real_run_added_with_interval_labels(real_run_dir, real_run_echem_opts, tmp_path):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text("name: tiny\nseed: 0\nmax_frames: 6\nfamilies: {hc_normal_cycling: 1}\n")
    build_dataset(cfg, tmp_path / "ds", workers=1, progress=False)
    opts = real_run_echem_opts
    ds = add_measured(tmp_path / "ds", real_run_dir / "nmr", REPO / "docs" / "real_run_intervals.csv",
                      opts, run_id="li_li_tegdme")
    v = ds.run("li_li_tegdme")
    assert len(v.frames) == 600 and v.family == "measured"
    labels = v.frames["label"].tolist()
    t = v.frames["t_s"].to_numpy()
    # frames 1-3 (midpoints < 900 s) normal, all later ones plating_onset (microstructure growth)
    assert all(lab == "normal_lithiation" for lab, ts in zip(labels, t) if ts < 900)
    assert all(lab == "plating_onset" for lab, ts in zip(labels, t) if ts >= 900)
    assert sum(ts < 900 for ts in t) == 3
    # the potential export covers the middle of the run only: frames outside have NaN potential
    pot = v.frames["potential_V"].to_numpy()
    assert np.isnan(pot[0]) and np.isfinite(pot[100]) and np.isnan(pot[-1])
    # the measured run's spectra show the microstructure line growing (258-285 ppm)
    ppm = ds.ppm_grid
    band = (ppm >= 258) & (ppm < 285)
    hi = np.nansum(np.asarray(v.spectra)[:, band], axis=1)
    assert hi[-1] > 10 * hi[0]
    m = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert m["measured_runs"][0]["run_id"] == "li_li_tegdme" and m["n_runs"] == 2
    # the appended run updated the content sketch as if the dataset had been sketched whole
    assert m["content_sketch"]["n_frames"] == 606
    assert compare_sketches(m["content_sketch"], sketch_dataset(ds))[0]
    assert pd.read_parquet(tmp_path / "ds" / "runs.parquet")["split"].tolist()[-1] == "test"
