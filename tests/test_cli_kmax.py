"""The ``meanfield kmax`` and ``meanfield info`` commands, run as real subprocesses."""

import json

import numpy as np
import pytest

from meanfield import growth_rate


def test_kmax_json(cli):
    res = cli("kmax", "--beta", "2", "--beta", "5", "--beta", "7", "--json")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert [d["k_max"] for d in data] == [2, 3, 4]
    for d in data:
        assert {"beta", "dim", "model", "k_max", "gamma_max", "k_runner_up", "gamma_ratio",
                "gamma"} <= set(d)
        assert len(d["gamma"]) - 1 >= 2 * d["k_max"] + 5
        np.testing.assert_allclose(d["gamma"], growth_rate(np.arange(len(d["gamma"])), d["beta"]),
                                   rtol=1e-12)
    assert data[1]["gamma"][3] == pytest.approx(18.596070, rel=1e-6)


def test_kmax_sa_dim3_and_large_beta(cli):
    res = cli("kmax", "--beta", "5000", "--dim", "3", "--model", "sa", "--json")
    assert res.returncode == 0, res.stderr
    (d,) = json.loads(res.stdout)
    assert d["model"] == "sa" and d["dim"] == 3
    assert abs(d["k_max"] - (np.sqrt(1e4) - 0.5)) <= 1
    assert all(g is not None and np.isfinite(g) for g in d["gamma"])
    # raw USA at beta = 5000 exceeds float64: reported through its logarithm, no inf/NaN
    res = cli("kmax", "--beta", "5000", "--json")
    (d,) = json.loads(res.stdout)
    assert d["gamma_max"] is None and np.isfinite(d["log_gamma_max"])
    assert d["k_max"] == 100


def test_kmax_table_and_plot(cli, tmp_path):
    png = tmp_path / "k.png"
    res = cli("kmax", "--beta-range", "1:8:0.5", "--plot", str(png))
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].split()[:5] == ["beta", "k_max", "gamma_max", "k_runner_up", "gamma_ratio"]
    assert len(lines) == 1 + 14 + 1  # header, 14 beta values (8 excluded), figure line
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 20_000


@pytest.mark.parametrize("args,param", [
    (["--beta", "-1"], "--beta"),
    (["--beta", "nan"], "--beta"),
    (["--beta", "2", "--dim", "1"], "--dim"),
    (["--beta-range", "5:1:1"], "--beta-range"),
    (["--beta", "2", "--model", "xyz"], "--model"),
])
def test_kmax_bad_input(cli, tmp_path, args, param):
    png = tmp_path / "never.png"
    res = cli("kmax", *args, "--plot", str(png))
    assert res.returncode == 2
    assert res.stdout == ""
    err = res.stderr.strip().splitlines()
    assert len(err) == 1 and param in err[0] and "Traceback" not in res.stderr
    assert not png.exists()


def test_info(cli):
    res = cli("info")
    assert res.returncode == 0
    assert "meanfield-pde" in res.stdout and "pyfftw" in res.stdout and "shtns" in res.stdout
