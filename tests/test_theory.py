"""Theory toolkit: Funk-Hecke coefficients, growth rates, k_max (DESIGN.md section 2)."""

import numpy as np
import pytest
from scipy.special import iv

from meanfield import (
    CallableKernel,
    ExponentialKernel,
    InputError,
    exit_time,
    funk_hecke_quadrature,
    growth_rate,
    harmonic_multiplicity,
    kmax_asymptotic,
    kmax_transitions,
    mode_selection,
    most_unstable_mode,
    sphere_area,
)

BETAS = [0.1, 0.5, 1.0, 3.0, 10.0, 25.0, 50.0]


@pytest.mark.parametrize("d", range(2, 9))
def test_closed_form_equals_rodrigues_quadrature(d):
    # cancellation-free (Rodrigues) Gauss-Jacobi quadrature: relative 1e-10 everywhere,
    # including lambda_30 at beta = 0.1 (~1e-70 of lambda_0)
    k = np.arange(31)
    for b in BETAS:
        kern = ExponentialKernel(b)
        closed = kern.funk_hecke(k, d)
        quad = funk_hecke_quadrature(kern, k, d, method="rodrigues")
        np.testing.assert_allclose(quad, closed, rtol=1e-10, atol=0)


@pytest.mark.parametrize("d", [2, 3, 5, 8])
def test_closed_form_equals_direct_projection(d):
    # the direct projection sums W(t_i) P_k(t_i) with |P_k/P_k(1)| <= 1: its error is
    # round-off, ~1e-15..1e-13 of lambda_0 (max W/lambda_0 grows like beta); it meets 1e-10
    # relative wherever lambda_k >= 1e-2 lambda_0, below that only the absolute floor holds
    k = np.arange(31)
    for b in BETAS:
        kern = ExponentialKernel(b)
        closed = kern.funk_hecke(k, d)
        proj = funk_hecke_quadrature(kern, k, d, method="projection")
        big = closed >= 1e-2 * closed[0]
        np.testing.assert_allclose(proj[big], closed[big], rtol=1e-10)
        np.testing.assert_allclose(proj, closed, rtol=0, atol=1e-12 * closed[0])


def test_callable_kernel_matches_exponential_and_polynomial():
    b = 3.0
    user = CallableKernel(lambda t: np.exp(b * t) / b)
    ref = ExponentialKernel(b).funk_hecke(np.arange(12), 3)
    got = funk_hecke_quadrature(user, np.arange(12), 3)
    np.testing.assert_allclose(got[:4], ref[:4], rtol=1e-10)  # lambda_k >= 1e-2 lambda_0
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-14 * ref[0])
    # W(t) = t^2 on S^2: lambda_0 = 4 pi/3, lambda_2 = 8 pi/15 (Legendre), others 0
    sq = CallableKernel(lambda t: t * t)
    lam = funk_hecke_quadrature(sq, np.arange(5), 3)
    np.testing.assert_allclose(lam, [4 * np.pi / 3, 0, 8 * np.pi / 15, 0, 0], atol=1e-13)
    # derivative from the Chebyshev interpolant
    t = np.linspace(-1, 1, 7)
    np.testing.assert_allclose(user.derivative(t), np.exp(b * t), rtol=0, atol=1e-11 * np.exp(b))


def test_circle_coefficients_are_bessel():
    k = np.arange(20)
    for b in (0.3, 2.0, 7.0, 40.0):
        np.testing.assert_allclose(ExponentialKernel(b).funk_hecke(k, 2),
                                   2 * np.pi * iv(k, b) / b, rtol=1e-13)


def test_sphere_closed_form_d3():
    k = np.arange(10)
    b = 5.0
    lam = ExponentialKernel(b).funk_hecke(k, 3)
    np.testing.assert_allclose(lam, 4 * np.pi * np.sqrt(np.pi / (2 * b)) * iv(k + 0.5, b) / b,
                               rtol=1e-13)


def test_growth_rates_reference_values():
    np.testing.assert_allclose(growth_rate(np.arange(1, 8), 5.0),
                               np.arange(1, 8) ** 2 * iv(np.arange(1, 8), 5.0) / 5.0, rtol=1e-13)
    assert growth_rate(3, 5.0) == pytest.approx(18.596070, rel=1e-6)
    assert growth_rate(3, 5.0, 3) == pytest.approx(9.97809, rel=1e-5)
    assert most_unstable_mode(2.0) == 2
    assert most_unstable_mode(5.0) == 3
    assert most_unstable_mode(7.0) == 4
    # gamma_k = p_inf k (k+d-2) lambda_k for every d
    for d in (2, 3, 4, 7):
        k = np.arange(1, 9)
        lam = ExponentialKernel(4.0).funk_hecke(k, d)
        np.testing.assert_allclose(growth_rate(k, 4.0, d), k * (k + d - 2) * lam / sphere_area(d),
                                   rtol=1e-12)


def test_sa_is_usa_over_partition():
    k = np.arange(1, 10)
    for b in (0.5, 5.0, 30.0):
        np.testing.assert_allclose(growth_rate(k, b, 2, "sa"), growth_rate(k, b) / iv(0, b),
                                   rtol=1e-12)
        z3 = np.sinh(b) / b  # d = 3: Z_inf = Gamma(3/2)(2/b)^{1/2} I_{1/2}(b) = sinh(b)/b
        np.testing.assert_allclose(growth_rate(k, b, 3, "sa"), growth_rate(k, b, 3) / z3,
                                   rtol=1e-12)


def test_scaled_time_unit_is_raw_times_exp_minus_beta():
    k = np.arange(1, 6)
    np.testing.assert_allclose(growth_rate(k, 9.0, 3, time_unit="scaled"),
                               growth_rate(k, 9.0, 3) * np.exp(-9.0), rtol=1e-13)


def test_real_k_is_continuous_through_integers():
    k = np.array([2.0, 2.5, 3.0])
    g = growth_rate(k, 5.0)
    assert g[0] < g[1] < g[2]  # rising through k = 2..3 at beta = 5 (k_max = 3)
    assert growth_rate(3.0 + 1e-9, 5.0) == pytest.approx(growth_rate(3, 5.0), rel=1e-7)


@pytest.mark.parametrize("d", [2, 3])
def test_no_overflow_at_beta_5000(d):
    sel = mode_selection(5000.0, d)
    assert np.all(np.isfinite(sel.log_gamma[1:]))
    assert abs(sel.k_max - kmax_asymptotic(5000.0, d)) <= 1
    assert abs(sel.k_max - (np.sqrt(2 * 5000.0) - (d - 2) / 2)) <= 1
    g = growth_rate(np.arange(1, 200), 5000.0, d, time_unit="scaled")
    assert np.all(np.isfinite(g)) and np.all(g > 0)
    assert np.all(np.isfinite(growth_rate(np.arange(1, 200), 5000.0, d, "sa")))
    lam = ExponentialKernel(5000.0, "scaled").funk_hecke(np.arange(150), d)
    assert np.all(np.isfinite(lam)) and np.all(lam > 0)


def test_beta_zero_kuramoto_limit():
    for d in (2, 3, 6):
        g = growth_rate(np.arange(0, 5), 0.0, d)
        np.testing.assert_allclose(g, [0, (d - 1) / d, 0, 0, 0])
        # continuity with small beta
        assert growth_rate(1, 1e-7, d) == pytest.approx((d - 1) / d, rel=1e-6)
        lam = ExponentialKernel(0.0).funk_hecke(np.arange(3), d)
        np.testing.assert_allclose(lam, [0, sphere_area(d) / d, 0])
    assert most_unstable_mode(0.0) == 1


def test_mode_selection_runner_up_and_ratio():
    sel = mode_selection(5.0)
    assert (sel.k_max, sel.k_runner_up) == (3, 4)
    assert sel.gamma_ratio == pytest.approx(growth_rate(4, 5.0) / growth_rate(3, 5.0), rel=1e-13)
    assert sel.gamma.size - 1 >= 2 * sel.k_max + 5
    assert mode_selection(2.0).gamma_ratio == pytest.approx(0.6948, abs=1e-4)  # seed 003 notes
    assert mode_selection(7.0).gamma_ratio == pytest.approx(0.9394, abs=1e-4)


@pytest.mark.parametrize("d", [2, 3, 5])
def test_transitions_are_where_kmax_steps(d):
    trans = kmax_transitions(d, 6)
    for k, bt in enumerate(trans, start=1):
        assert growth_rate(k, bt, d) == pytest.approx(growth_rate(k + 1, bt, d), rel=1e-10)
        assert most_unstable_mode(bt * (1 - 1e-6), d) == k
        assert most_unstable_mode(bt * (1 + 1e-6), d) == k + 1


def test_multiplicity():
    assert [harmonic_multiplicity(k, 2) for k in range(4)] == [1, 2, 2, 2]
    assert [harmonic_multiplicity(k, 3) for k in range(4)] == [1, 3, 5, 7]
    assert [harmonic_multiplicity(k, 4) for k in range(4)] == [1, 4, 9, 16]


def test_exit_time_matches_circle_tv_formula():
    # circle: E T = (1/gamma)[ln(N)/2 + ln(pi tau/2) + gamma_E/2] for a TV threshold tau
    g = growth_rate(2, 2.0)
    for n in (1000, 16000):
        expect = (0.5 * np.log(n) + np.log(np.pi * 0.3 / 2) + np.euler_gamma / 2) / g
        got = exit_time(n, 2.0, threshold=np.pi * 0.3 / np.sqrt(2))
        assert got == pytest.approx(expect, rel=1e-12)
    # slope in ln N is 1/(2 gamma_max) (0.3629 at beta = 2)
    slope = exit_time(2e4, 2.0) - exit_time(1e4, 2.0)
    assert slope / np.log(2) == pytest.approx(1 / (2 * g), rel=1e-12)
    assert 1 / (2 * g) == pytest.approx(0.3629, abs=1e-4)


@pytest.mark.parametrize("bad", [-1.0, np.nan, np.inf])
def test_bad_beta_raises(bad):
    with pytest.raises(InputError, match="beta"):
        growth_rate(2, bad)
    with pytest.raises(ValueError, match="beta"):
        ExponentialKernel(bad)


def test_bad_dim_and_model_raise():
    with pytest.raises(InputError, match="dim"):
        growth_rate(2, 1.0, 1)
    with pytest.raises(InputError, match="model"):
        growth_rate(2, 1.0, 2, "xx")
    with pytest.raises(InputError, match="time_unit"):
        growth_rate(2, 1.0, 2, "sa", "scaled")
