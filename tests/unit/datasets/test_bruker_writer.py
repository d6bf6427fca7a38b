"""Writer tests: the files have TopSpin's layout (padding, byte order, scaling, JCAMP, audit)."""
from __future__ import annotations

import re
import warnings
from datetime import datetime, timedelta, timezone

import nmrglue as ng
import numpy as np
import pytest

from lisentry.datasets.frame import AcquisitionParams
from lisentry.datasets.io import bruker_writer as bw

T0 = datetime(2024, 3, 1, 12, 0, 0, tzinfo=timezone.utc)
ACQ = AcquisitionParams(nucleus="7Li", sfo1_MHz=116.70060943, bf1_MHz=116.641914, o1_Hz=58695.43,
                        sw_Hz=93457.9439252336, td=1000, ns=256, ds=0, d1_s=1.0,
                        group_delay_pts=44.75, extra={"DECIM": 2, "DSPFVS": 10, "GRPDLY": -1})


def _fid(n=500):
    t = np.arange(n) / ACQ.sw_Hz
    return np.exp(2j * np.pi * 2100.0 * t - 300 * t)


@pytest.mark.parametrize("dtypa,bytorda", [(0, 0), (0, 1), (2, 0), (2, 1)])
def test_fid_bytes_padding_and_scaling(tmp_path, dtypa, bytorda):
    fid = _fid()
    bw.write_experiment(tmp_path / "1", fid, ACQ, T0, T0 + timedelta(seconds=5),
                        dtypa=dtypa, bytorda=bytorda)
    raw = (tmp_path / "1" / "fid").read_bytes()
    item = 4 if dtypa == 0 else 8
    assert len(raw) % 1024 == 0 and len(raw) == -(-1000 * item // 1024) * 1024
    vals = np.frombuffer(raw, (">" if bytorda else "<") + ("i4" if dtypa == 0 else "f8"))
    assert not vals[1000:].any()  # padding is zeros
    z = vals[:1000:2] + 1j * vals[1:1000:2]
    if dtypa == 0:
        assert 2**28 <= np.abs(vals).max() < 2**31  # a good part of the int32 range
        z = z / np.abs(np.concatenate([fid.real, fid.imag])).max() / 2**29
        np.testing.assert_allclose(z, fid, atol=1e-8)
    else:
        np.testing.assert_array_equal(z, fid)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dic, data = ng.bruker.read(str(tmp_path / "1"), read_pulseprogram=False)
    assert dic["acqus"]["TD"] == 1000 and dic["acqus"]["BYTORDA"] == bytorda
    assert dic["acqus"]["DTYPA"] == dtypa and dic["acqus"]["NUC1"] == "7Li"
    assert data.shape == (512,)


def test_generic_acqus_has_the_values(tmp_path):
    bw.write_experiment(tmp_path / "1", _fid(), ACQ, T0, T0 + timedelta(seconds=290.5))
    d = ng.bruker.read_jcamp(str(tmp_path / "1" / "acqus"))
    assert d["SFO1"] == ACQ.sfo1_MHz and d["BF1"] == ACQ.bf1_MHz and d["O1"] == ACQ.o1_Hz
    assert d["SW_h"] == ACQ.sw_Hz and d["NS"] == 256 and d["D"][1] == 1.0
    assert d["DATE"] == int(T0.timestamp()) + 290
    assert (d["DECIM"], d["DSPFVS"], d["GRPDLY"]) == (2, 10, -1)
    assert d["SW"] == pytest.approx(ACQ.sw_Hz / ACQ.sfo1_MHz)
    assert d["_coreheader"][0].startswith("##TITLE= Parameter file, TOPSPIN")


def test_real_acqus_template_kept_verbatim(tmp_path, real_acqus_template):
    bw.write_experiment(tmp_path / "1", _fid(), ACQ, T0, T0 + timedelta(seconds=5),
                        acqus_template=real_acqus_template)
    new = (tmp_path / "1" / "acqus").read_text(encoding="latin-1").splitlines()
    old = real_acqus_template.splitlines()
    assert len(new) == len(old)
    changed = {o.split("=")[0] for o, n in zip(old, new) if o != n}
    assert changed <= {"##$TD", "##$DATE", "##$BYTORDA", "##$YMAX_a", "##$YMIN_a",
                       old[old.index("##$D= (0..63)") + 1].split("=")[0]}
    assert "##$TD= 1000" in new and "##$BYTORDA= 0" in new
    assert any(l.startswith("##$PROBHD= <5 mm ATMC") for l in new)  # multi-line string kept


def test_real_audita_template_structure(tmp_path, real_audita_template):
    bw.write_experiment(tmp_path / "1", _fid(), ACQ, T0, T0 + timedelta(seconds=5),
                        audita_template=real_audita_template)
    new = (tmp_path / "1" / "audita.txt").read_text(encoding="latin-1")
    pat = re.compile(r"^\(\s+1,<[^>]+>,<[^>]+>,<[^>]+>,<go>,<TOPSPIN 2\.1>,$", re.M)
    assert pat.search(real_audita_template) and pat.search(new)
    assert "\tstarted at 2024-03-01 12:00:00.000 +0000," in new
    assert new.startswith("##TITLE= Audit trail, TOPSPIN\t\tVersion 2.1")


def test_audita_43_in_progress_entry():
    txt = bw.render_audita(T0, None, topspin="4.3")
    assert "acquisition in progress" in txt and "2024-03-01T12:00:00.000+0000" in txt
    with pytest.raises(ValueError):
        bw.render_audita(T0, None, topspin="2.1")


def test_add_digital_filter_delay_is_undone_by_nmrglue():
    x = _fid(1024)
    for g, trunc in ((44.75, False), (68.0, True), (3.0, True)):
        y = bw.add_digital_filter_delay(x, g)
        back = ng.proc_base.rev(ng.proc_base.rev(ng.bruker.rm_dig_filter(
            ng.proc_base.fft(y), 2, 10, grpdly=g, truncate_grpdly=trunc, post_proc=True)))
        np.testing.assert_allclose(back, ng.proc_base.fft(x), atol=1e-9 * 1024)
    # integer delay: a circular shift in time (up to a constant phase)
    y = bw.add_digital_filter_delay(x, 6)
    ratio = y[6:20] / x[:14]
    np.testing.assert_allclose(ratio, ratio[0] * np.ones(14), atol=1e-9)


def test_write_ser_layout(tmp_path):
    fids = np.stack([_fid()] * 3)
    bw.write_ser(tmp_path / "1", fids, ACQ, T0, 10.0, n_rows_total=5)
    assert (tmp_path / "1" / "ser").stat().st_size == 5 * 1024 * 4
    a2 = ng.bruker.read_jcamp(str(tmp_path / "1" / "acqu2s"))
    assert a2["TD"] == 5
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dic, data = ng.bruker.read(str(tmp_path / "1"), read_pulseprogram=False)
    assert data.shape == (5, 512)


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="complex points"):
        bw.write_experiment(tmp_path / "1", _fid(100), ACQ, T0, T0)
    with pytest.raises(ValueError, match="dtypa"):
        bw.write_experiment(tmp_path / "1", _fid(), ACQ, T0, T0, dtypa=7)
    with pytest.raises(ValueError, match="topspin"):
        bw.write_experiment(tmp_path / "1", _fid(), ACQ, T0, T0, topspin="3.9")
