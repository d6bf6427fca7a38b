"""Property tests: corrupting one frame of a real-format series yields one InputError for that
frame (one line, naming its file) and the good frames still come through; nothing else escapes."""
from __future__ import annotations

import shutil
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lisentry.datasets.errors import InputError
from lisentry.datasets.frame import AcquisitionParams, RawFrame
from lisentry.datasets.io import bruker
from lisentry.datasets.io import bruker_writer as bw

T0 = datetime(2024, 3, 1, 12, 0, 0, tzinfo=timezone.utc)
ACQ = AcquisitionParams(nucleus="7Li", sfo1_MHz=116.70060943, bf1_MHz=116.641914, o1_Hz=58695.43,
                        sw_Hz=93457.9439252336, td=512, ns=4, ds=0, d1_s=1.0,
                        group_delay_pts=44.75, extra={"DECIM": 2, "DSPFVS": 10, "GRPDLY": -1})
REQUIRED = ("NUC1", "SFO1", "BF1", "O1", "SW_h", "TD", "NS", "DTYPA", "BYTORDA")
_BASES: dict[str, Path] = {}


def _base(template: str | None, dtypa: int) -> Path:
    key = f"{template is not None}-{dtypa}"
    if key not in _BASES:
        root = Path(tempfile.mkdtemp(prefix="lisentry-corrupt-"))
        t = np.arange(256) / ACQ.sw_Hz
        fid = np.exp(2j * np.pi * 4000 * t - 400 * t)
        for i in (1, 2, 3):
            s = T0 + timedelta(seconds=60 * i)
            bw.write_experiment(root / str(i), fid, ACQ, s, s + timedelta(seconds=20),
                                dtypa=dtypa, bytorda=i % 2, acqus_template=template)
        _BASES[key] = root
    return _BASES[key]


junk = st.text(alphabet="abcxyz#!?;:", min_size=1, max_size=6)


@st.composite
def corruption(draw):
    kind = draw(st.sampled_from(["truncate_fid", "delete_line", "garble_value", "break_line",
                                 "extraneous", "truncate_acqus", "dtypa", "nucleus",
                                 "nan", "delete_fid", "delete_acqus", "array_junk"]))
    return kind, draw(st.sampled_from(REQUIRED)), draw(junk), draw(st.floats(0.0, 0.999)), \
        draw(st.sampled_from(["23Na", "1H", "6Li", "off", "7li"]))


def _apply(e: Path, kind, key, text, frac, nuc):
    acqus = e / "acqus"
    lines = acqus.read_text(encoding="latin-1").splitlines()
    idx = next(i for i, l in enumerate(lines) if l.startswith(f"##${key}="))
    raw = (e / "fid").read_bytes()
    if kind == "truncate_fid":
        (e / "fid").write_bytes(raw[: int(frac * ACQ.td * 4)])
    elif kind == "delete_line":
        del lines[idx]
    elif kind == "garble_value":
        lines[idx] = f"##${key}= {text}" if key != "NUC1" else f"##$NUC1= <{text}>"
    elif kind == "break_line":
        lines[idx] = lines[idx].replace("=", " ", 1)
    elif kind == "extraneous":  # a stray line between two parameters
        starts = [i for i, l in enumerate(lines) if l.startswith("##$")]
        lines.insert(starts[int(frac * len(starts))], "x" + text)
    elif kind == "truncate_acqus":
        body = "\n".join(lines)
        acqus.write_text(body[: int(frac * body.index("##END="))], encoding="latin-1")
        return
    elif kind == "dtypa":
        lines = [("##$DTYPA= 7" if l.startswith("##$DTYPA=") else l) for l in lines]
    elif kind == "nucleus":
        lines = [(f"##$NUC1= <{nuc}>" if l.startswith("##$NUC1=") else l) for l in lines]
    elif kind == "nan":
        vals = np.frombuffer(raw, "<f8").copy()  # frame 2 is little-endian (BYTORDA 0)
        vals[int(frac * ACQ.td)] = np.nan if frac < 0.5 else np.inf
        (e / "fid").write_bytes(vals.astype("<f8").tobytes())
    elif kind == "array_junk":  # a stray token in the D array (recycle delay D[1])
        d = next(i for i, l in enumerate(lines) if l.startswith("##$D="))
        lines[d + 1] = lines[d + 1] + " x" + text
    elif kind == "delete_fid":
        (e / "fid").unlink()
    elif kind == "delete_acqus":
        acqus.unlink()
        return
    acqus.write_text("\n".join(lines) + "\n", encoding="latin-1")


def _check(template, case):
    kind = case[0]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "nmr"
        shutil.copytree(_base(template, 2 if kind == "nan" else 0), root)
        _apply(root / "2", *case)
        out = list(bruker.iter_raw_frames(root, skip_incomplete=False))
    assert len(out) == 3, out
    assert isinstance(out[0], RawFrame) and out[0].expno == 1
    assert isinstance(out[2], RawFrame) and out[2].expno == 3
    err = out[1]
    assert isinstance(err, InputError), (case, err)
    msg = str(err)
    assert "\n" not in msg and str(root / "2") in msg, msg


SETTINGS = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(case=corruption())
def test_corrupt_frame_generic_template(case):
    _check(None, case)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=corruption())
def test_corrupt_frame_real_template(real_acqus_template, case):
    _check(real_acqus_template, case)


def test_deleting_audita_falls_back_to_date(tmp_path):
    root = tmp_path / "nmr"
    shutil.copytree(_base(None, 0), root)
    (root / "2" / "audita.txt").unlink()
    out = list(bruker.iter_raw_frames(root))
    assert [type(o) for o in out] == [RawFrame] * 3
    assert out[1].time_source == "acqus_DATE"
