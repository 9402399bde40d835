import os
import subprocess
import sys

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")


def run_cli(*args: str, cwd=None, timeout: float = 300, env=None) -> subprocess.CompletedProcess:
    """Run the real ``meanfield`` entry point in a subprocess."""
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "meanfield.cli", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=timeout, env=full_env)


@pytest.fixture
def cli():
    return run_cli


#: what a grid run file with atoms must share with its single run's: to round-off, and exactly
ATOM_RUN_CLOSE = ("density", "time", "diag_time", "ebar", "atom_position", "atom_mass_by_atom",
                  "event_time", "event_mass")
ATOM_RUN_EXACT = ("steps", "atoms", "event_kind")


def assert_same_run_files(dir_a, dir_b, exact, close, tol: float) -> list[str]:
    """Every ``beta=*.h5`` run file of dir_a has a twin in dir_b with the datasets ``exact``
    equal and ``close`` within ``tol`` of each series' largest |value| (NaNs in the same
    places); returns the names compared."""
    import h5py
    import numpy as np

    names = sorted(p.name for p in dir_a.glob("beta=*.h5"))
    for name in names:
        with h5py.File(dir_a / name) as fa, h5py.File(dir_b / name) as fb:
            for k in exact:
                assert np.array_equal(fa[k][()], fb[k][()], equal_nan=fa[k].dtype.kind == "f"), \
                    (name, k)
            for k in close:
                a, b = fa[k][()], fb[k][()]
                assert a.shape == b.shape and np.array_equal(np.isnan(a), np.isnan(b)), \
                    (name, k)
                scale = np.nanmax(np.abs(a)) if a.size else 0.0
                assert np.nanmax(np.abs(a - b), initial=0.0) <= tol * scale, (name, k)
    return names
