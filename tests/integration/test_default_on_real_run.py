"""The shipped default model on the first frames of the real Li | Li run (skips when
../shared/real is absent; fails under CI=true).

What it guards: a Li | Li cell has no hard carbon, so no frame may be called `cluster_growth`.
The previous default did (frames 5-9), because the potentiostat log starts at the sixth frame
and its training runs that began without a potential were hard-carbon runs whose clusters grew
from the first frame. The frames here have potential for frames 6 on, as in `make real-run`.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from lisentry.datasets.loading import load_run
from lisentry.datasets.pipeline import ProcessingConfig
from lisentry.detector.online import OnlineDetector
from lisentry.models.bundle import load_bundle

REPO = Path(__file__).resolve().parents[2]
DEFAULT = REPO / "models" / "default"
N_FRAMES = 28


@pytest.mark.skipif(not (DEFAULT / "card.json").is_file(), reason="no shipped default model")
def test_default_calls_no_clusters_in_a_li_li_cell(real_run_dir, real_run_echem_opts, tmp_path):
    nmr = tmp_path / "nmr"
    for k in range(1, N_FRAMES + 1):          # a copy of the first frames, in the test's tmp
        shutil.copytree(real_run_dir / "nmr" / str(k), nmr / str(k))
    bundle = load_bundle(DEFAULT)
    run = load_run(nmr, real_run_echem_opts, config=ProcessingConfig.from_dict(bundle.card["processing"]),
                   on_note=None)
    assert len(run.frames) == N_FRAMES
    rows = OnlineDetector(bundle).label_frames(run.frames)
    labels = [r["label"] for r in rows]
    assert "cluster_growth" not in labels, labels
    assert max(r["p_cluster_growth"] for r in rows) < 0.5
    # the microstructure line grows from frame 4 (docs/real_run.md): plating is called within
    # ~2.1 h (the default of 2026-12-07, second part, with window features: from frame 24; the
    # first part's from frame 17, the one before from frame 14)
    assert labels[-1] == "plating_onset" and labels.index("plating_onset") < 26, labels
    assert "imminent_short" not in labels
