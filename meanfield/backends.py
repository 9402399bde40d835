"""Which optional numerical backends are importable, and their versions."""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import os


def _version(module: str) -> str | None:
    """Installed version from package metadata (importing shtns prints a banner)."""
    try:
        return importlib.metadata.version(module)
    except importlib.metadata.PackageNotFoundError:
        try:
            mod = importlib.import_module(module)
        except Exception:
            return None
        return str(getattr(mod, "__version__", "unknown version"))


def library_versions() -> dict[str, str]:
    """Versions of the libraries a run depends on (recorded in every output file)."""
    return dict(_library_versions())


@functools.cache
def _library_versions() -> dict[str, str]:
    """Once per process (metadata lookups cost ~30 ms, every run file records them)."""
    out = {}
    for name in ("numpy", "scipy", "pyfftw", "shtns", "h5py", "matplotlib"):
        v = _version(name)
        out[name] = v if v is not None else "not installed"
    try:
        import h5py

        out["hdf5"] = h5py.version.hdf5_version
    except ImportError:
        pass
    return out


def backend_report() -> list[str]:
    lines = []
    import numpy
    import scipy

    lines.append(f"numpy {numpy.__version__}, scipy {scipy.__version__}")
    v = _version("pyfftw")
    if v is None:
        lines.append("pyfftw: not available (circle FFTs fall back to scipy.fft)")
    else:
        threads = os.environ.get("MEANFIELD_FFT_THREADS", "1")
        lines.append(f"pyfftw {v}: available (FFT threads per run: {threads}, "
                     f"cores here: {os.cpu_count()})")
    v = _version("shtns")
    try:
        from solvers.sphere import import_shtns

        import_shtns()  # the compiled module really loads (banner silenced)
        lines.append(f"shtns {v}: available")
    except (RuntimeError, ImportError, OSError) as exc:
        lines.append(f"shtns: not available, no sphere solver ({exc})")
    try:
        import h5py

        lines.append(f"h5py {h5py.__version__}, HDF5 {h5py.version.hdf5_version}")
    except ImportError:
        lines.append("h5py: not available (no HDF5 output)")
    d, dist = _version("dask"), _version("distributed")
    if d and dist:
        lines.append(f"dask {d}, distributed {dist}: available (sweeps on Dask clusters)")
    else:
        lines.append("dask/distributed: not installed (pip install 'meanfield-pde[dask]')")
    return lines
