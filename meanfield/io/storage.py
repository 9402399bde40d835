"""HDF5 run files: one file per run, self-describing, resumable.

Format version 2 (version 1 files, written before the spectrum vocabulary was unified, are
read by ``meanfield.io.reader`` with their old names mapped: fourier/power/gegenbauer ->
spectrum, dominant_degree -> dominant_mode).

Layout (plain h5py paths; xarray ``engine="h5netcdf"`` sees the same as labelled arrays):

    /                      attributes: every config value as "section.key", config_text,
                           conventions, kernel, time_unit, package and library versions,
                           seed, created, status (running | interrupted | complete | failed),
                           message
    /time                  snapshot times (dimension scale)
    /theta                 cell centres in [0, 2 pi) (dimension scale; other grids: lat/lon)
    /density               (time, theta) float64, chunked by time, compressed
    /diag_time             times of the diagnostic records (dimension scale)
    /mass, /energy, /ebar, /min_density, /max_density, /dt, /steps, ...   (diag_time)
    /mode                  degrees k of the spectrum (dimension scale)
    /spectrum              (diag_time, mode) ||P_k mu||_L2, /dominant_mode (diag_time)
    /checkpoint            (live files only) the exact solver state to resume from

Crash safety: the run writes ``PATH.partial``; a checkpoint flushes it and copies it
atomically (temporary file, fsync, rename) to ``PATH.checkpoint``; only a finished (or
failed) run is renamed to ``PATH``. A SIGKILL at any moment therefore leaves either nothing,
or a consistent checkpoint to resume from, never a file that looks complete.
"""

from __future__ import annotations

import datetime as _dt
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from meanfield._version import __version__
from meanfield.theory.errors import InputError

FORMAT = "meanfield-run"
FORMAT_VERSION = 2
CONVENTIONS_VERSION = 2
CONVENTIONS_FILE = Path(__file__).resolve().parents[2] / "docs" / "conventions.md"


def partial_path(path: str | os.PathLike) -> Path:
    return Path(f"{os.fspath(path)}.partial")


def checkpoint_path(path: str | os.PathLike) -> Path:
    return Path(f"{os.fspath(path)}.checkpoint")


def _attr(value: Any) -> Any:
    if isinstance(value, bool):
        return np.bool_(value)
    if isinstance(value, list):
        return np.asarray(value, dtype=float)
    return value


class RunWriter:
    """Create and append to a run file (the live ``.partial`` file)."""

    def __init__(self, file: h5py.File, compression: str = "gzip", level: int = 4) -> None:
        self.f = file
        self.compression = None if compression == "none" else compression
        self.level = level if compression == "gzip" else None

    # ---------------------------------------------------------------- creation
    @classmethod
    def create(cls, path: Path, attrs: Mapping[str, Any],
               coords: Mapping[str, tuple[np.ndarray, dict]], field: str,
               field_dims: tuple[str, ...], field_attrs: dict,
               diag_specs: Mapping[str, tuple[tuple[str, ...], str, dict]],
               compression: str = "gzip", level: int = 4,
               static: Mapping[str, tuple[np.ndarray, dict, tuple[str, ...]]] | None = None,
               ) -> RunWriter:
        """``diag_specs``: name -> (extra dims, dtype, attrs) of each diagnostic series."""
        path.parent.mkdir(parents=True, exist_ok=True)
        # default (earliest) format: no "open for write" flag, so a flushed copy opens cleanly
        f = h5py.File(path, "w")
        w = cls(f, compression, level)
        f.attrs["format"] = FORMAT
        f.attrs["format_version"] = FORMAT_VERSION
        for k, v in attrs.items():
            f.attrs[k] = _attr(v)
        for name, attrs_t in (("time", {"long_name": "snapshot time"}),
                              ("diag_time", {"long_name": "diagnostics time"})):
            ds = f.create_dataset(name, shape=(0,), maxshape=(None,), dtype="f8",
                                  chunks=(1024,))
            ds.attrs.update(attrs_t)
            ds.make_scale(name)
        for name, (values, cattrs) in coords.items():
            ds = f.create_dataset(name, data=np.asarray(values))
            ds.attrs.update(cattrs)
            ds.make_scale(name)
        for name, (values, sattrs, sdims) in (static or {}).items():
            ds = f.create_dataset(name, data=np.asarray(values))
            ds.attrs.update(sattrs)
            for i, d in enumerate(sdims):
                ds.dims[i].attach_scale(f[d])
                ds.dims[i].label = d
        shape = tuple(f[d].shape[0] for d in field_dims)
        row_bytes = 8 * int(np.prod(shape))
        rows = max(1, min(64, (1 << 20) // max(row_bytes, 1)))
        ds = f.create_dataset(field, shape=(0, *shape), maxshape=(None, *shape), dtype="f8",
                              chunks=(rows, *shape), compression=w.compression,
                              compression_opts=w.level, shuffle=w.compression is not None)
        ds.attrs.update(field_attrs)
        ds.dims[0].attach_scale(f["time"])
        ds.dims[0].label = "time"
        for i, d in enumerate(field_dims, start=1):
            ds.dims[i].attach_scale(f[d])
            ds.dims[i].label = d
        for name, (dims, dtype, dattrs) in diag_specs.items():
            extra = tuple(f[d].shape[0] for d in dims)
            ds = f.create_dataset(name, shape=(0, *extra), maxshape=(None, *extra), dtype=dtype,
                                  chunks=(256, *extra))
            ds.attrs.update(dattrs)
            ds.dims[0].attach_scale(f["diag_time"])
            ds.dims[0].label = "diag_time"
            for i, d in enumerate(dims, start=1):
                ds.dims[i].attach_scale(f[d])
                ds.dims[i].label = d
        f.attrs["diagnostics"] = np.array(list(diag_specs), dtype=h5py.string_dtype())
        f.attrs["field"] = field
        return w

    @classmethod
    def reopen(cls, path: Path, compression: str = "gzip", level: int = 4) -> RunWriter:
        return cls(h5py.File(path, "r+"), compression, level)

    # ---------------------------------------------------------------- appending
    @staticmethod
    def _append(ds: h5py.Dataset, value) -> None:
        n = ds.shape[0]
        ds.resize(n + 1, axis=0)
        ds[n] = value

    def append_snapshot(self, t: float, values: np.ndarray) -> None:
        self._append(self.f["time"], t)
        self._append(self.f[self.f.attrs["field"]], values)

    def append_diagnostics(self, t: float, diag: Mapping[str, Any]) -> None:
        self._append(self.f["diag_time"], t)
        for name in self.f.attrs["diagnostics"]:
            self._append(self.f[name], diag[name])

    def counts(self) -> tuple[int, int]:
        return self.f["time"].shape[0], self.f["diag_time"].shape[0]

    # ---------------------------------------------------------------- state
    def set_status(self, status: str, message: str = "") -> None:
        self.f.attrs["status"] = status
        self.f.attrs["message"] = message
        self.f.attrs["updated"] = _now()

    def write_state(self, arrays: Mapping[str, np.ndarray], scalars: Mapping[str, Any]) -> None:
        if "checkpoint" in self.f:
            del self.f["checkpoint"]
        g = self.f.create_group("checkpoint")
        for k, v in arrays.items():
            g.create_dataset(k, data=v)
        for k, v in scalars.items():
            g.attrs[k] = v
        n_snap, n_diag = self.counts()
        g.attrs["n_snapshots"] = n_snap
        g.attrs["n_diagnostics"] = n_diag

    def checkpoint(self, final_path: Path, arrays, scalars, status: str = "running") -> None:
        """Flush the live file and atomically publish a consistent copy as the checkpoint."""
        self.write_state(arrays, scalars)
        self.set_status(status)
        self.f.flush()
        target = checkpoint_path(final_path)
        tmp = Path(f"{target}.tmp")
        shutil.copyfile(self.f.filename, tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)

    def finish(self, final_path: Path, status: str, message: str = "") -> None:
        """Close as complete/failed and rename to the final path; drop the checkpoint."""
        if "checkpoint" in self.f:
            del self.f["checkpoint"]
        self.set_status(status, message)
        live = Path(self.f.filename)
        self.f.close()
        with open(live, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(live, final_path)
        checkpoint_path(final_path).unlink(missing_ok=True)

    def close(self) -> None:
        if self.f.id.valid:
            self.f.close()


def read_checkpoint(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any], str]:
    """(arrays, scalars, config_text) of a checkpoint file."""
    with h5py.File(path, "r") as f:
        g = f["checkpoint"]
        arrays = {k: g[k][()] for k in g}
        scalars = dict(g.attrs)
        return arrays, scalars, str(f.attrs["config_text"])


def restore_live_from_checkpoint(final_path: Path) -> Path:
    """Copy the checkpoint to the live path and truncate series to the checkpointed counts."""
    live = partial_path(final_path)
    shutil.copyfile(checkpoint_path(final_path), live)
    with h5py.File(live, "r+") as f:
        n_snap = int(f["checkpoint"].attrs["n_snapshots"])
        n_diag = int(f["checkpoint"].attrs["n_diagnostics"])
        f["time"].resize(n_snap, axis=0)
        f[f.attrs["field"]].resize(n_snap, axis=0)
        f["diag_time"].resize(n_diag, axis=0)
        for name in f.attrs["diagnostics"]:
            f[name].resize(n_diag, axis=0)
    return live


def last_snapshot(path: str | os.PathLike) -> np.ndarray:
    """The last stored snapshot of a run file (InputError if it is foreign or has none)."""
    file_status(path)  # foreign or unreadable files raise InputError
    with h5py.File(path, "r") as f:
        ds = f[str(f.attrs["field"])]
        if ds.shape[0] == 0:
            raise InputError("file", "run file has no snapshots", str(path))
        return ds[-1]


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def base_attrs(cfg_flat: Mapping[str, Any], cfg_text: str, extra: Mapping[str, Any]) -> dict:
    from meanfield.backends import library_versions

    attrs: dict[str, Any] = dict(cfg_flat)
    attrs["config_text"] = cfg_text
    attrs["package"] = "meanfield-pde"
    attrs["package_version"] = __version__
    for lib, ver in library_versions().items():
        attrs[f"version.{lib}"] = ver
    attrs["conventions_version"] = CONVENTIONS_VERSION
    attrs["conventions_doc"] = "docs/conventions.md"
    if CONVENTIONS_FILE.is_file():  # the full text: a file describes itself
        attrs["conventions_text"] = CONVENTIONS_FILE.read_text()
    attrs["created"] = _now()
    attrs["status"] = "running"
    attrs["message"] = ""
    attrs.update(extra)
    return attrs


def file_status(path: str | os.PathLike) -> str | None:
    """'complete', 'failed', ... for a run file; None if absent; InputError if foreign."""
    p = Path(path)
    if not p.exists():
        return None
    try:
        with h5py.File(p, "r") as f:
            if f.attrs.get("format") != FORMAT:
                raise InputError("file", "is not a meanfield run file (no format attribute "
                                 f"'{FORMAT}')", str(path))
            return str(f.attrs.get("status", "unknown"))
    except OSError:
        raise InputError("file", "is not a readable HDF5 file", str(path)) from None
