"""Reading run files: ``meanfield.open(path)`` -> :class:`Run`."""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from meanfield.io import storage
from meanfield.theory.errors import InputError


class Run:
    """A run file opened read-only. Snapshots load lazily; diagnostics load on first use.

    Use as a context manager or call ``close()``. Attributes: ``config`` (nested dict),
    ``attrs`` (root attributes), ``times``, ``coords`` (grid coordinates), ``diagnostics``
    (dict of arrays on ``diag_times``), ``density`` (the h5py dataset: slicing reads only
    what is asked for), ``snapshot(i)``, ``analyze()``, ``to_xarray()``.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        status = storage.file_status(self.path)
        if status is None:
            hint = ""
            if storage.checkpoint_path(self.path).exists():
                hint = " (an unfinished run has a checkpoint: meanfield run --resume)"
            raise InputError("file", "does not exist" + hint, str(path))
        self._f = h5py.File(self.path, "r")

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._f.id.valid:
            self._f.close()

    # ------------------------------------------------------------------ metadata
    @cached_property
    def attrs(self) -> dict[str, Any]:
        return {k: (v.decode() if isinstance(v, bytes) else v) for k, v in self._f.attrs.items()}

    @cached_property
    def config(self) -> dict[str, dict[str, Any]]:
        from meanfield import config as config_mod

        return config_mod.from_text(str(self.attrs["config_text"]))

    @property
    def status(self) -> str:
        return str(self.attrs.get("status"))

    @property
    def field(self) -> str:
        return str(self.attrs["field"])

    @property
    def domain(self) -> str:
        return str(self.attrs.get("domain", ""))

    @property
    def domain_module(self):
        """The run's :class:`meanfield.domains.base.Domain`."""
        from meanfield.domains import get

        return get(self.domain)

    @cached_property
    def times(self) -> np.ndarray:
        return self._f["time"][()]

    @property
    def n_snapshots(self) -> int:
        return int(self._f["time"].shape[0])

    @property
    def density(self) -> h5py.Dataset:
        return self._f[self.field]

    @cached_property
    def coords(self) -> dict[str, np.ndarray]:
        dims = [d.label for d in self.density.dims][1:]
        return {d: self._f[d][()] for d in dims}

    def snapshot(self, i: int) -> np.ndarray:
        return self.density[i]

    @cached_property
    def diag_times(self) -> np.ndarray:
        return self._f["diag_time"][()]

    @property
    def format_version(self) -> int:
        return int(self.attrs.get("format_version", 1))

    @cached_property
    def diagnostics(self) -> dict[str, np.ndarray]:
        """Diagnostic series by name (format 1 files: mapped to the names of format 2)."""
        out = {str(k): self._f[str(k)][()] for k in self._f.attrs["diagnostics"]}
        return self.domain_module.upgrade_diagnostics(out, self.format_version)

    def extra(self, name: str) -> h5py.Dataset | None:
        """A dataset stored with every snapshot (e.g. atom_position), or None."""
        names = [str(n) for n in self._f.attrs.get("snapshot_extras", [])]
        return self._f[name] if name in names else None

    def static(self, name: str) -> np.ndarray | None:
        """A dataset stored once per run (e.g. the particles' Q, K, V, masses), or None."""
        return self._f[name][()] if name in self._f else None

    @cached_property
    def events(self) -> dict[str, np.ndarray]:
        """The event table (``event_time`` and the columns listed in the file), or {}."""
        names = [str(n) for n in self._f.attrs.get("events", [])]
        if not names:
            return {}
        return {"event_time": self._f["event_time"][()]} | {n: self._f[n][()] for n in names}

    def diagnostic_label(self, name: str) -> str | None:
        """The ``long_name`` a file gives a diagnostic series (None if absent)."""
        if name not in self._f:
            return None
        label = self._f[name].attrs.get("long_name")
        return label.decode() if isinstance(label, bytes) else (None if label is None
                                                                else str(label))

    # ------------------------------------------------------------------ helpers
    def analyze(self, **params) -> dict[str, Any]:
        from meanfield.analysis import analyze

        return analyze(self, **params)

    def to_xarray(self):
        import xarray as xr

        return xr.open_dataset(self.path, engine="h5netcdf")

    def __repr__(self) -> str:
        return (f"<meanfield.Run {self.path} status={self.status} domain={self.domain} "
                f"snapshots={self.n_snapshots}>")


def open_run(path: str | os.PathLike) -> Run:
    """Open a run file (read-only). Raises InputError for a missing or foreign file."""
    return Run(path)
