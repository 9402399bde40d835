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

Crash safety: the run writes ``PATH.partial`` (records buffered and written in blocks); a
checkpoint flushes it, clones it (copy-on-write where the file system can, else a copy) to a
temporary file, adds the exact solver state there, fsyncs and renames it to
``PATH.checkpoint``; only a finished (or failed) run is renamed to ``PATH``. A SIGKILL at any
moment therefore leaves either nothing, or a consistent checkpoint to resume from, never a
file that looks complete. Free space: a run needs about twice its final size while running
(the live file and its checkpoint) unless the file system clones copy-on-write. A failed
write raises :class:`StorageError` (one line: the file, the reason, the space needed).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import os
import shutil
import sys
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


class StorageError(OSError):
    """Writing a run's output failed or would fail (disk full, file too large, I/O error).

    ``path`` is the file being written, ``needed`` an estimate of the free bytes the run
    needs, ``free`` the free bytes on that file system now (None if unknown). ``fatal`` is
    True when the HDF5 library itself saw the failure: its file state is then undefined and
    closing it can crash the process, so the caller must exit without closing
    (``os._exit``) after cleaning up."""

    def __init__(self, path: Path, cause: BaseException, needed: int | None = None, *,
                 fatal: bool = False) -> None:
        self.path, self.cause, self.needed, self.fatal = Path(path), cause, needed, fatal
        self.free = free_bytes(self.path)
        reason = getattr(cause, "strerror", None) or str(cause)
        errno_ = getattr(cause, "errno", None)
        msg = f"writing {self.path} failed ({reason}"
        msg += f" [errno {errno_}])" if errno_ else ")"
        if needed is not None:
            msg += f"; the run needs about {_mb(needed)} free"
        if self.free is not None:
            msg += f" ({_mb(self.free)} free now)"
        super().__init__(errno_ or 0, msg)


def _mb(n: float) -> str:
    return f"{n / 2**20:.1f} MB" if n >= 2**20 else f"{n / 1024:.0f} kB"


def free_bytes(path: Path) -> int | None:
    """Free bytes for an unprivileged writer on the file system of ``path`` (or its folder)."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        st = os.statvfs(p)
    except OSError:
        return None
    return int(st.f_bavail * st.f_frsize)


#: room kept free beyond the bytes about to be written (HDF5 metadata, file system)
MARGIN_BYTES = 1 << 20


def file_size_limit() -> int | None:
    """The per-process file size limit (RLIMIT_FSIZE), None if unlimited."""
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    except (ImportError, OSError, ValueError):
        return None
    return None if soft == resource.RLIM_INFINITY else int(soft)


def ensure_room(path: Path, nbytes: int, size_after: int, needed: int | None) -> None:
    """Raise StorageError *before* writing ``nbytes`` to ``path`` (which will then be
    ``size_after`` bytes long) if the file system or the file size limit cannot take them
    with a margin. Checking first keeps the HDF5 library away from failed writes, after
    which its files cannot be closed safely."""
    want = int(1.05 * nbytes) + MARGIN_BYTES
    free = free_bytes(path)
    limit = file_size_limit()
    if free is not None and free < want:
        cause = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    elif limit is not None and size_after + MARGIN_BYTES > limit:
        cause = OSError(errno.EFBIG, os.strerror(errno.EFBIG) + f" (file size limit "
                        f"{_mb(limit)})")
    else:
        return
    raise StorageError(path, cause, needed)


def clone_file(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst``: a copy-on-write clone where the file system supports it
    (btrfs, XFS with reflink: no data copied, no space used until either side changes),
    otherwise an in-kernel copy."""
    with open(src, "rb") as fs, open(dst, "wb") as fd:
        try:
            import fcntl

            fcntl.ioctl(fd.fileno(), 0x40049409, fs.fileno())  # FICLONE
            return
        except (OSError, ImportError):
            pass
        shutil.copyfileobj(fs, fd, 1 << 22)


#: records buffered in memory before they are written to the live file
FLUSH_RECORDS = 256
#: bytes of snapshots buffered in memory before they are written
FLUSH_BYTES = 32 << 20


class RunWriter:
    """Create and append to a run file (the live ``.partial`` file).

    Records are buffered in memory and written in blocks (``FLUSH_RECORDS`` diagnostic
    records or ``FLUSH_BYTES`` of snapshots, and at every checkpoint), not one resize per
    record. Any failed write raises :class:`StorageError` naming the file and the free space
    the run needs; ``estimated_bytes`` (set by the driver) is that estimate.
    """

    def __init__(self, file: h5py.File, compression: str = "gzip", level: int = 4) -> None:
        self.f = file
        self.path = Path(file.filename)
        self.compression = None if compression == "none" else compression
        self.level = level if compression == "gzip" else None
        self.estimated_bytes: int | None = None
        self.reopened = False
        self._snaps: list[tuple[float, np.ndarray, Mapping[str, Any]]] = []
        self._diags: list[tuple[float, Mapping[str, Any]]] = []
        self._events: list[tuple[float, Mapping[str, Any]]] = []
        self._snap_bytes = 0

    def _fail(self, exc: BaseException, path: Path | None = None) -> StorageError:
        """A write failed inside HDF5: the error is fatal (see StorageError)."""
        _silence_h5py_deallocs()
        return StorageError(path or self.path, exc, self.estimated_bytes, fatal=True)

    def _size(self) -> int:
        try:
            return os.path.getsize(self.path)
        except OSError:
            return 0

    def _buffered_bytes(self) -> int:
        rows = [d for _, d in self._diags] + [e for _, e in self._events] + [
            x for _, _, x in self._snaps]
        extra = sum(sum(np.asarray(v).nbytes for v in d.values()) + 8 for d in rows)
        return self._snap_bytes + 8 * len(self._snaps) + extra

    # ---------------------------------------------------------------- creation
    @classmethod
    def create(cls, path: Path, attrs: Mapping[str, Any],
               coords: Mapping[str, tuple[np.ndarray, dict]], field: str,
               field_dims: tuple[str, ...], field_attrs: dict,
               diag_specs: Mapping[str, tuple[tuple[str, ...], str, dict]],
               compression: str = "gzip", level: int = 4,
               static: Mapping[str, tuple[np.ndarray, dict, tuple[str, ...]]] | None = None,
               snapshot_specs: Mapping[str, tuple[tuple[str, ...], str, dict]] | None = None,
               event_specs: Mapping[str, tuple[tuple[str, ...], str, dict]] | None = None,
               ) -> RunWriter:
        """``diag_specs``: name -> (extra dims, dtype, attrs) of each diagnostic series;
        ``snapshot_specs`` the same for datasets stored with every snapshot (axis ``time``),
        ``event_specs`` for a table of events (axis ``event_time``)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        ensure_room(path, MARGIN_BYTES, MARGIN_BYTES, None)
        try:
            # default (earliest) format: no "open for write" flag, so a copy opens cleanly
            f = h5py.File(path, "w")
        except OSError as exc:
            raise StorageError(path, exc) from None
        w = cls(f, compression, level)
        try:
            w._layout(attrs, coords, field, field_dims, field_attrs, diag_specs, static,
                      snapshot_specs or {}, event_specs or {})
            f.flush()
        except (OSError, RuntimeError) as exc:
            w.abandon(fatal=True)
            raise w._fail(exc) from None
        return w

    def _layout(self, attrs, coords, field, field_dims, field_attrs, diag_specs, static,
                snapshot_specs, event_specs):
        f = self.f
        f.attrs["format"] = FORMAT
        f.attrs["format_version"] = FORMAT_VERSION
        for k, v in attrs.items():
            f.attrs[k] = _attr(v)
        time_unit = str(attrs.get("time_unit", "raw"))
        axes = [("time", "snapshot time"), ("diag_time", "diagnostics time")]
        if event_specs:
            axes.append(("event_time", "event time"))
        for name, long_name in axes:
            ds = f.create_dataset(name, shape=(0,), maxshape=(None,), dtype="f8",
                                  chunks=(1024,))
            ds.attrs.update({"long_name": f"{long_name} ({time_unit} time unit, "
                             "docs/conventions.md §2.3)", "units": "1",
                             "time_unit": time_unit})
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
                              chunks=(rows, *shape), compression=self.compression,
                              compression_opts=self.level,
                              shuffle=self.compression is not None)
        ds.attrs.update(field_attrs)
        ds.dims[0].attach_scale(f["time"])
        ds.dims[0].label = "time"
        for i, d in enumerate(field_dims, start=1):
            ds.dims[i].attach_scale(f[d])
            ds.dims[i].label = d
        for axis, specs in (("diag_time", diag_specs), ("time", snapshot_specs),
                            ("event_time", event_specs)):
            for name, (dims, dtype, dattrs) in specs.items():
                extra = tuple(f[d].shape[0] for d in dims)
                row = np.dtype(dtype).itemsize * int(np.prod(extra))
                ds = f.create_dataset(name, shape=(0, *extra), maxshape=(None, *extra),
                                      dtype=dtype, chunks=(max(8, min(256, 16384 // row)),
                                                           *extra))
                ds.attrs.update(dattrs)
                ds.dims[0].attach_scale(f[axis])
                ds.dims[0].label = axis
                for i, d in enumerate(dims, start=1):
                    ds.dims[i].attach_scale(f[d])
                    ds.dims[i].label = d
        strings = h5py.string_dtype()
        f.attrs["diagnostics"] = np.array(list(diag_specs), dtype=strings)
        f.attrs["snapshot_extras"] = np.array(list(snapshot_specs), dtype=strings)
        f.attrs["events"] = np.array(list(event_specs), dtype=strings)
        f.attrs["field"] = field

    @classmethod
    def reopen(cls, path: Path, compression: str = "gzip", level: int = 4) -> RunWriter:
        try:
            w = cls(h5py.File(path, "r+"), compression, level)
        except OSError as exc:
            raise StorageError(path, exc) from None
        w.reopened = True
        return w

    # ---------------------------------------------------------------- appending
    def _names(self, attr: str) -> list[str]:
        """Dataset names listed in a file attribute (fixed once the file is laid out: read
        once, not per record; an HDF5 attribute read costs ~0.1 ms)."""
        cache = self.__dict__.setdefault("_name_cache", {})
        if attr not in cache:
            cache[attr] = [str(n) for n in self.f.attrs.get(attr, [])]
        return cache[attr]

    def append_snapshot(self, t: float, values: np.ndarray,
                        extras: Mapping[str, Any] | None = None) -> None:
        values = np.array(values, dtype=float, copy=True)
        extras = {n: np.array((extras or {})[n], copy=True)
                  for n in self._names("snapshot_extras")}
        self._snaps.append((float(t), values, extras))
        self._snap_bytes += values.nbytes
        if self._snap_bytes >= FLUSH_BYTES:
            self.flush()

    def append_diagnostics(self, t: float, diag: Mapping[str, Any]) -> None:
        self._diags.append((float(t), {n: np.array(diag[n], copy=True)
                                       for n in self._names("diagnostics")}))
        if len(self._diags) >= FLUSH_RECORDS:
            self.flush()

    def append_events(self, rows) -> None:
        """Rows (t, {name: value}) of the event table."""
        names = self._names("events")
        for t, row in rows:
            self._events.append((float(t), {n: np.array(row[n], copy=True) for n in names}))

    def flush(self) -> None:
        """Write the buffered records (one resize and one write per dataset) and flush."""
        pending = self._buffered_bytes()
        ensure_room(self.path, pending, self._size() + pending, self.estimated_bytes)
        try:
            f = self.f
            if self._snaps:
                _extend(f["time"], np.array([t for t, _, _ in self._snaps]))
                _extend(f[str(f.attrs["field"])], np.stack([v for _, v, _ in self._snaps]))
                for name in self._names("snapshot_extras"):
                    _extend(f[name], np.stack([x[name] for _, _, x in self._snaps]))
                self._snaps, self._snap_bytes = [], 0
            if self._events:
                _extend(f["event_time"], np.array([t for t, _ in self._events]))
                for name in self._names("events"):
                    _extend(f[name], np.stack([e[name] for _, e in self._events]))
                self._events = []
            if self._diags:
                _extend(f["diag_time"], np.array([t for t, _ in self._diags]))
                for name in f.attrs["diagnostics"]:
                    name = str(name)
                    _extend(f[name], np.stack([d[name] for _, d in self._diags]))
                self._diags = []
            f.flush()
        except (OSError, RuntimeError) as exc:
            raise self._fail(exc) from None

    def counts(self) -> tuple[int, int, int]:
        """(snapshots, diagnostic records, events) in the file, buffered ones included."""
        events = self.f["event_time"].shape[0] if "event_time" in self.f else 0
        return (self.f["time"].shape[0] + len(self._snaps),
                self.f["diag_time"].shape[0] + len(self._diags), events + len(self._events))

    # ---------------------------------------------------------------- state
    def set_status(self, status: str, message: str = "") -> None:
        try:
            self.f.attrs["status"] = status
            self.f.attrs["message"] = message
            self.f.attrs["updated"] = _now()
        except (OSError, RuntimeError) as exc:
            raise self._fail(exc) from None

    def checkpoint(self, final_path: Path, arrays, scalars, status: str = "running") -> None:
        """Publish a consistent copy of the run so far, with the exact solver state, as
        ``PATH.checkpoint`` (temporary file, fsync, rename: the previous checkpoint stays
        valid until the new one is complete). The live file itself never holds the state, so
        repeated checkpoints leave no dead space in it."""
        self.flush()
        target = checkpoint_path(final_path)
        tmp = Path(f"{target}.tmp")
        size = self._size() + sum(np.asarray(a).nbytes for a in arrays.values())
        ensure_room(tmp, size, size, self.estimated_bytes)
        try:
            clone_file(self.path, tmp)
            with h5py.File(tmp, "r+") as c:
                g = c.create_group("checkpoint")
                for k, v in arrays.items():
                    g.create_dataset(k, data=v)
                for k, v in scalars.items():
                    g.attrs[k] = v
                n_snap, n_diag, n_event = self.counts()
                g.attrs["n_snapshots"] = n_snap
                g.attrs["n_diagnostics"] = n_diag
                g.attrs["n_events"] = n_event
                c.attrs["status"] = status
                c.attrs["updated"] = _now()
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except (OSError, RuntimeError) as exc:
            # the live file is intact: only the temporary copy failed
            tmp.unlink(missing_ok=True)
            raise StorageError(tmp, exc, self.estimated_bytes) from None

    def finish(self, final_path: Path, status: str, message: str = "") -> None:
        """Close as complete/failed and rename to the final path; drop the checkpoint.

        A file that was reopened (a resumed run) is repacked: HDF5 does not reuse the space
        of chunks rewritten in a later session, which left resumed files ~50 % larger."""
        self.flush()
        self.set_status(status, message)
        try:
            self.f.close()
            if self.reopened:
                size = self._size()
                try:
                    ensure_room(self.path, size, size, self.estimated_bytes)
                    repack(self.path)
                except StorageError:
                    pass  # keep the file as it is: complete, only larger than it could be
            with open(self.path, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(self.path, final_path)
        except (OSError, RuntimeError) as exc:
            raise self._fail(exc) from None
        checkpoint_path(final_path).unlink(missing_ok=True)

    def close(self) -> None:
        if getattr(self, "_dead", False):
            return
        if self.f.id.valid:
            try:
                self.f.close()
            except (OSError, RuntimeError):
                self.abandon()

    def abandon(self, fatal: bool = False) -> None:
        """Stop writing: drop the buffers and close the file (after a refused write the file
        is healthy and closes normally). After a ``fatal`` failure the HDF5 file is left
        open, since closing it could crash the process: the caller exits."""
        self._snaps, self._diags, self._events, self._snap_bytes = [], [], [], 0
        self._dead = True
        if fatal:
            _silence_h5py_deallocs()
            return
        with contextlib.suppress(Exception):
            self.f.close()


def _silence_h5py_deallocs() -> None:
    """After a failed HDF5 write, h5py reports every later failed flush of a released
    object as 'Exception ignored ...' (thousands of lines): drop those reports."""
    previous = sys.unraisablehook
    if getattr(previous, "_meanfield", False):
        return

    def hook(unraisable):
        if "h5py" in repr(getattr(unraisable, "object", "")) or isinstance(
                unraisable.exc_value, RuntimeError):
            return
        previous(unraisable)

    hook._meanfield = True  # type: ignore[attr-defined]
    sys.unraisablehook = hook


_SCALE_ATTRS = ("DIMENSION_LIST", "REFERENCE_LIST", "CLASS", "NAME")


def repack(path: Path) -> None:
    """Rewrite a run file without dead space (same datasets, chunks, compression,
    attributes and dimension scales), atomically."""
    tmp = Path(f"{path}.repack")
    try:
        with h5py.File(path, "r") as src, h5py.File(tmp, "w") as dst:
            for k, v in src.attrs.items():
                dst.attrs[k] = v
            scales, dims = [], {}
            for name, ds in src.items():
                if not isinstance(ds, h5py.Dataset):
                    continue
                out = dst.create_dataset(name, shape=ds.shape, maxshape=ds.maxshape,
                                         dtype=ds.dtype, chunks=ds.chunks,
                                         compression=ds.compression,
                                         compression_opts=ds.compression_opts,
                                         shuffle=ds.shuffle)
                if ds.size:
                    out[...] = ds[()]
                for k, v in ds.attrs.items():
                    if k not in _SCALE_ATTRS:
                        out.attrs[k] = v
                if ds.attrs.get("CLASS") == b"DIMENSION_SCALE":
                    scales.append(name)
                dims[name] = [d.label for d in ds.dims]
            for name in scales:
                dst[name].make_scale(name)
            for name, labels in dims.items():
                for i, label in enumerate(labels):
                    if label and label in dst and label != name:
                        dst[name].dims[i].attach_scale(dst[label])
                        dst[name].dims[i].label = label
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _extend(ds: h5py.Dataset, values: np.ndarray) -> None:
    n = ds.shape[0]
    ds.resize(n + values.shape[0], axis=0)
    ds[n:] = values


def read_checkpoint(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any], str]:
    """(arrays, scalars, config_text) of a checkpoint file."""
    with h5py.File(path, "r") as f:
        g = f["checkpoint"]
        arrays = {k: g[k][()] for k in g}
        scalars = dict(g.attrs)
        return arrays, scalars, str(f.attrs["config_text"])


def restore_live_from_checkpoint(final_path: Path) -> tuple[Path, dict, dict]:
    """Make the live file from the checkpoint: (live path, state arrays, scalars).

    The copy's series already end at the checkpointed counts; only the small state group is
    removed from the live copy."""
    live = partial_path(final_path)
    ckpt = checkpoint_path(final_path)
    arrays, scalars, _ = read_checkpoint(ckpt)
    try:
        clone_file(ckpt, live)
        with h5py.File(live, "r+") as f:
            counts = {"time": int(scalars["n_snapshots"]),
                      "diag_time": int(scalars["n_diagnostics"]),
                      "event_time": int(scalars.get("n_events", 0))}
            members = {"time": [f.attrs["field"], *f.attrs.get("snapshot_extras", [])],
                       "diag_time": list(f.attrs["diagnostics"]),
                       "event_time": list(f.attrs.get("events", []))}
            for axis, n in counts.items():
                if axis in f and f[axis].shape[0] != n:
                    for name in [axis, *members[axis]]:
                        f[str(name)].resize(n, axis=0)
            del f["checkpoint"]
    except (OSError, RuntimeError) as exc:
        live.unlink(missing_ok=True)
        raise StorageError(live, exc) from None
    return live, arrays, scalars


def last_snapshot(path: str | os.PathLike, index: int = -1) -> np.ndarray:
    """The last (or ``index``-th) stored snapshot of a run file (InputError if it is foreign
    or has none)."""
    file_status(path)  # foreign or unreadable files raise InputError
    with h5py.File(path, "r") as f:
        ds = f[str(f.attrs["field"])]
        if ds.shape[0] == 0:
            raise InputError("file", "run file has no snapshots", str(path))
        return ds[index]


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
