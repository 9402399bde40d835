"""Phase diagrams (seed 001): the fused batched kernels against a plain numpy step, P against
its pairwise definition, Gamma_{inf, delta} against particles, the large-d limit, and
``meanfield phase`` through the CLI (resume after SIGKILL, process pool, Dask, bad input)."""

import json
import math
import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from meanfield.theory.metastability import gamma_curve, orthogonal_hitting_time
from meanfield.theory.reference import orthogonal_curve
from solvers.particles.fused import run_batch, step_schedule


def _numpy_steps(x, beta, steps, model, project, b=None, v=None):
    """The same rule written densely in numpy (softmax with the row-max shift)."""
    x = x.copy()
    n, d = x.shape[1:]
    bm = np.broadcast_to(np.eye(d) if b is None else b, (x.shape[0], d, d))
    vm = np.broadcast_to(np.eye(d) if v is None else v, (x.shape[0], d, d))
    for h in steps:
        sc = np.einsum("bid,bde,bje->bij", x, bm, x)
        mx = sc.max(-1, keepdims=True)
        w = np.exp(beta[:, None, None] * (sc - mx))
        num = np.einsum("bij,bjd->bid", w, np.einsum("bde,bje->bjd", vm, x))
        u = num / w.sum(-1)[..., None] if model == "sa" else \
            num * np.exp(beta[:, None, None] * mx) / n
        if project:
            u = u - np.sum(u * x, -1, keepdims=True) * x
        x = x + h * u
        x /= np.linalg.norm(x, axis=-1, keepdims=True)
    return x


@pytest.mark.parametrize("d", [2, 5, 20])
@pytest.mark.parametrize("model", ["sa", "usa"])
@pytest.mark.parametrize("rule", ["euler-unprojected", "euler"])
def test_fused_kernel_equals_the_dense_numpy_step(d, model, rule):
    """7 systems of 6 tokens, their own beta (and their own B, V): the fused kernel equals
    the dense numpy rule step for step to 1e-12 (measured <= 8e-16 SA, 2e-14 USA), with
    steps landing on the outputs; P equals its pairwise definition exactly."""
    rng = np.random.default_rng(0)
    x0 = rng.standard_normal((7, 6, d))
    x0 /= np.linalg.norm(x0, axis=-1, keepdims=True)
    beta = np.linspace(0.5, 3.0, 7)
    times = np.linspace(0, 2.0, 6)
    steps, counts = step_schedule(times, 0.03)
    assert counts.sum() == steps.size and abs(steps.sum() - 2.0) < 1e-12
    out = run_batch(x0, beta, times, 0.03, model=model, rule=rule)
    ref = _numpy_steps(x0, beta, steps, model, rule == "euler")
    assert np.abs(out["x"] - ref).max() < 1e-12
    b = rng.standard_normal((7, d, d)) / math.sqrt(d)
    v = np.eye(d) + 0.3 * rng.standard_normal((7, d, d))
    gen = run_batch(x0, beta, times, 0.03, model=model, rule=rule, B=b, V=v)
    assert np.abs(gen["x"] - _numpy_steps(x0, beta, steps, model, rule == "euler", b, v)
                  ).max() < 1e-12
    x = out["x"]
    for s in range(7):   # P: ordered pairs i != j with <x_i, x_j> >= 1 - delta
        close = sum(float(np.dot(x[s, i], x[s, j])) >= 1 - 1e-3 for i in range(6)
                    for j in range(6) if i != j)
        assert out["p"][s, -1] == close / 30
        e = sum(math.exp(beta[s] * (float(np.dot(x[s, i], x[s, j])) - 1)) for i in range(6)
                for j in range(6)) / 36
        assert out["ebar"][s, -1] == pytest.approx(e, rel=1e-13)


def test_gamma_curve_matches_orthogonal_particles():
    """Gamma_{inf, delta} (closed form of t*): the notes' table (n = 32, delta = 1e-3:
    t*_SA(4) = 6.954, t*_USA(4) = 1.131, t*_SA(9) = 178.73) and particles started
    orthonormal (n = d = 8, adaptive DOP853 at rtol 1e-12): at t* every pairwise inner
    product is 1 - delta to 1e-8 (measured 3e-11), SA and USA."""
    from solvers.particles import ParticleSystem
    from solvers.stepping import StepStats

    assert orthogonal_hitting_time(4.0, 32, 1e-3, "sa") == pytest.approx(6.954, abs=5e-4)
    assert orthogonal_hitting_time(4.0, 32, 1e-3, "usa") == pytest.approx(1.131, abs=5e-4)
    assert gamma_curve([9.0], 32, 1e-3)[0] == pytest.approx(178.73, abs=5e-3)
    for model in ("sa", "usa"):
        t_star = orthogonal_hitting_time(3.0, 8, 1e-3, model)
        ps = ParticleSystem(8, 8, 3.0, model, integrator="adaptive", rtol=1e-12, atol=1e-14,
                            normalization="1/N" if model == "usa" else None)
        x, _ = ps.advance(ps.check_state(np.eye(8)[None]), 0.0, t_star, StepStats())
        g = x[0] @ x[0].T
        assert np.abs(g[~np.eye(8, dtype=bool)] - (1 - 1e-3)).max() < 1e-8


def test_high_dimension_concentrates_on_the_orthogonal_curve():
    """Seed 001 Thm 4.7: i.i.d. uniform tokens (n = 8, beta = 2, SA, 8 systems) follow
    gamma_beta(t) up to ~sqrt(log d / d): the largest deviation over t in [0.5, 3] falls
    from 0.40 (d = 64) to 0.11 (d = 1024), within 2 sqrt(log d/d) at d = 1024 (projected
    Euler, dt = 1e-3)."""
    rng = np.random.default_rng(1)
    times = np.array([0.5, 1.0, 2.0, 3.0])
    g = orthogonal_curve(times, 8, 2.0, "sa")
    worst = []
    for d in (64, 1024):
        x = rng.standard_normal((8, 8, d))
        x /= np.linalg.norm(x, axis=-1, keepdims=True)
        dev = 0.0
        for i, t in enumerate(times):
            x = run_batch(x, np.full(8, 2.0), [t - (times[i - 1] if i else 0.0)], 1e-3,
                          rule="euler")["x"]
            gram = np.einsum("bid,bjd->bij", x, x)[:, ~np.eye(8, dtype=bool)]
            dev = max(dev, float(np.abs(gram - g[i]).max()))
        worst.append(dev)
    assert worst[1] < 0.5 * worst[0] and worst[1] < 2 * math.sqrt(math.log(1024) / 1024)



def _read(path):
    with h5py.File(path) as f:
        return {k: f[k][()] for k in ("P", "cluster_fraction", "ebar", "gamma_time",
                                      "clusters_median", "trajectory")}


def test_phase_cli_resumes_after_sigkill_and_executors_agree(cli, tmp_path):
    """``meanfield phase`` (96 realisations): killed (SIGKILL) after some betas finished, the
    re-run computes only the others, and uninterrupted runs on 2 processes (--jobs 2) and on a
    Dask LocalCluster give bitwise the same file; analyze and plot read the file; the seed 001
    Fig. 3 counts come out (beta = 4: 2 clusters, beta = 9: 3 clusters the modal counts at
    t = 30)."""
    args = ["phase", "--betas", "1,4,9,2.5,6", "--realisations", "96", "--outputs", "16",
            "--quiet"]
    proc = subprocess.Popen([sys.executable, "-m", "meanfield.cli", *args, "-o", "k.h5"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=dict(os.environ, MEANFIELD_NO_PROGRESS="1"))
    parts = tmp_path / "k.h5.parts"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(parts.glob("*.npz"))) < 2:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    n_done = len(list(parts.glob("*.npz")))
    assert 2 <= n_done < 5 and not (tmp_path / "k.h5").exists()
    res = cli(*args, "-o", "k.h5", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert f"({5 - n_done} computed, {n_done} resumed)" in res.stdout
    assert not parts.exists()
    ref = _read(tmp_path / "k.h5")
    for extra, name in ((["--jobs", "2"], "j.h5"), (["--dask-local", "2"], "d.h5")):
        res = cli(*args, *extra, "-o", name, cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        got = _read(tmp_path / name)
        assert all(np.array_equal(got[k], ref[k], equal_nan=True) for k in ref), name
    out = json.loads(cli("analyze", "k.h5", "--json", cwd=tmp_path).stdout)
    rows = {r["beta"]: r for r in out["rows"]}
    assert rows[4.0]["band_modal_clusters"] == 2 and rows[9.0]["band_modal_clusters"] == 3
    assert rows[1.0]["t_half"] < 10 and rows[4.0]["gamma_time"] == pytest.approx(6.954,
                                                                               abs=1e-3)
    res = cli("plot", "k.h5", "-o", "figs", cwd=tmp_path)
    assert res.returncode == 0 and (tmp_path / "figs" / "k_phase.png").exists()
    assert (tmp_path / "figs" / "k_zoom.png").exists()
    with h5py.File(tmp_path / "k.h5") as f:
        frac = f["cluster_fraction"][()]
        betas = list(f["beta"][()])
        assert f.attrs["seed"] == 0 and "[phase]" in f.attrs["config_text"]
    assert np.argmax(frac[betas.index(4.0), -1]) == 2
    assert np.argmax(frac[betas.index(9.0), -1]) == 3


@pytest.mark.parametrize("flags,key", [(["--realisations", "0"], "phase.realisations"),
                                       (["--ensemble", "goe"], "phase.ensemble"),
                                       (["--betas=-1,2"], "phase.betas"),
                                       (["--rule", "rk9"], "phase.rule")])
def test_phase_bad_input_is_one_line_and_writes_nothing(cli, tmp_path, flags, key):
    res = cli("phase", *flags, "-o", "x.h5", cwd=tmp_path)
    assert res.returncode == 2 and key in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and not list(tmp_path.iterdir())


def test_phase_config_file_with_an_unknown_key(cli, tmp_path):
    (tmp_path / "p.toml").write_text("[phase]\nn = 8\nbogus = 1\n")
    res = cli("phase", "p.toml", "-o", "x.h5", cwd=tmp_path)
    assert res.returncode == 2 and "phase.bogus" in res.stderr
