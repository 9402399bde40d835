"""Initial conditions on the circle (layer 1)."""

import numpy as np
import pytest

from meanfield import initial

DX = {m: 2 * np.pi / m for m in (64, 256, 1024)}


def _mass(p):
    return p.sum() * 2 * np.pi / p.size


def test_token_noise_is_resolution_independent():
    coarse = initial.token_noise(256, 1000, seed=3, cutoff=40)
    fine = initial.token_noise(1024, 1000, seed=3, cutoff=40)
    np.testing.assert_allclose(fine.reshape(-1, 4).mean(axis=1), coarse, rtol=0, atol=1e-14)
    assert _mass(coarse) == pytest.approx(1.0, abs=1e-14)


def test_token_noise_statistics():
    # N E|c_k|^2 = 1 for every k (the fluctuation of N i.i.d. uniform tokens)
    n, m = 5000, 256
    vals = []
    for seed in range(400):
        p = initial.token_noise(m, n, seed=seed, cutoff=20)
        c = np.fft.rfft(p)[1:21] * (2 * np.pi / m)
        vals.append(np.abs(c) ** 2)
    mean = n * np.mean(vals)  # 8000 exponential samples: std of the mean ~ 1/sqrt(8000)
    assert mean == pytest.approx(1.0, abs=4 / np.sqrt(8000))


def test_mode_and_white_noise():
    p = initial.mode(256, 3, 0.05, phase=0.4)
    assert _mass(p) == pytest.approx(1.0, abs=1e-14)
    # cell centres sit at (j + 1/2) dx: undo that half-cell phase and the averaging
    c3 = np.fft.rfft(p)[3] * DX[256] / np.sinc(3 / 256) * np.exp(-1.5j * DX[256])
    assert abs(c3) == pytest.approx(np.pi * 0.05, rel=1e-12)  # integral of alpha cos = pi alpha
    assert np.angle(c3) == pytest.approx(0.4, abs=1e-12)
    w = initial.white_noise(1024, 0.01, seed=2)
    assert np.std(w) == pytest.approx(0.01, rel=0.1)
    assert _mass(w) == pytest.approx(1.0, abs=1e-14)  # a probability density by default
    paper = initial.white_noise(1024, 0.01, seed=0, renormalize=False)
    assert _mass(paper) == pytest.approx(0.99691, abs=1e-5)  # seed 003's unnormalised noise
    with pytest.raises(ValueError, match="amplitude"):
        initial.white_noise(64, 1.0, seed=0)


def test_bumps_and_particles():
    p = initial.von_mises_bumps(1024, [0.5, 2.5, 4.5], kappa=80.0)
    assert _mass(p) == pytest.approx(1.0, abs=1e-13)
    p = initial.von_mises_bumps(1024, [1.0], [0.6], kappa=2000.0)  # overflow-safe, background
    assert _mass(p) == pytest.approx(1.0, abs=1e-12) and p.min() == pytest.approx(0.4 / (2 * np.pi))
    h = initial.from_particles(64, [0.1, 0.1, 3.0, -0.1, 2 * np.pi + 0.1])
    assert _mass(h) == pytest.approx(1.0)
    assert h[1] == pytest.approx(3 / 5 / DX[64])
    with pytest.raises(ValueError, match="masses"):
        initial.von_mises_bumps(64, [1.0, 2.0], [0.8, 0.8])
