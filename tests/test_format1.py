"""Files written before the redesign (format 1, tests/data/format1_*.h5, made by commit
b04377f) are still read, analysed and plotted, with the same results as then."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import meanfield
from meanfield.plots import plot_run

DATA = Path(__file__).resolve().parent / "data"

#: what ``meanfield analyze --json`` printed for each file with the code that wrote it
EXPECTED = {
    "circle": dict(k_max_predicted=3, dominant_mode_at_exit=3, final_clusters=3,
                   exit_time=0.22314545709995315, first_plateau_clusters=3,
                   fit=18.614098391914457, counts=[0] * 5 + [3] * 8),
    "particles": dict(k_max_predicted=3, dominant_mode_at_exit=2, final_clusters=2,
                      exit_time=0.12041405702348724, first_plateau_clusters=2, fit=None,
                      counts=[0] * 3 + [2] * 10),
    "zonal": dict(k_max_predicted=3, dominant_mode_at_exit=3, final_clusters=2,
                  exit_time=0.4773614989492073, first_plateau_clusters=2,
                  fit=9.906525117047314, counts=[0] * 6 + [2] * 5),
    "sphere": dict(k_max_predicted=3, dominant_mode_at_exit=None, final_clusters=0,
                   exit_time=None, first_plateau_clusters=None, fit=9.984274172782463,
                   counts=[0] * 5),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_format1_files_analyse_as_before(name, tmp_path):
    exp = EXPECTED[name]
    with meanfield.open(DATA / f"format1_{name}.h5") as run:
        assert run.format_version == 1
        d = run.diagnostics
        assert "spectrum" in d and "dominant_mode" in d  # old names mapped
        assert not {"fourier", "power", "gegenbauer", "dominant_degree"} & set(d)
        res = run.analyze()
        files = plot_run(run, tmp_path)
    for key in ("k_max_predicted", "dominant_mode_at_exit", "final_clusters",
                "first_plateau_clusters"):
        assert res[key] == exp[key], key
    if exp["exit_time"] is None:
        assert res["exit_time"] is None
    else:
        assert res["exit_time"] == pytest.approx(exp["exit_time"], rel=1e-12)
    fit = res["growth_rate_fit"]
    if exp["fit"] is None:
        assert fit is None
    else:  # the spectrum is a constant multiple of the old amplitudes: same log slope
        assert fit["measured"] == pytest.approx(exp["fit"], rel=1e-10)
    assert res["cluster_counts"] == exp["counts"]
    assert len(files) >= 4 and all(Path(f).stat().st_size > 5000 for f in files)


def test_format1_spectrum_is_the_l2_amplitude():
    """Old circle files stored |p_hat_k|; the reader gives ||P_k mu||_L2 = |p_hat_k|/sqrt(pi)
    (k >= 1) and 1/sqrt(2 pi) times the mass at k = 0."""
    import h5py

    with h5py.File(DATA / "format1_circle.h5", "r") as f:
        old = f["fourier"][()]
    with meanfield.open(DATA / "format1_circle.h5") as run:
        new = run.diagnostics["spectrum"]
        mass = run.diagnostics["mass"]
    np.testing.assert_allclose(new[:, 1:], old[:, 1:] / np.sqrt(np.pi), rtol=1e-15)
    np.testing.assert_allclose(new[:, 0], mass / np.sqrt(2 * np.pi), rtol=1e-12)
