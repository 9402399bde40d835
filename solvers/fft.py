"""Real FFT backend for the circle: pyfftw plans built once per grid, scipy.fft otherwise.

One narrow interface: ``RealFFT(n).forward(x)`` = numpy.fft.rfft(x) and
``RealFFT(n).inverse(X)`` = numpy.fft.irfft(X, n) (unnormalised forward, 1/n inverse).
The arrays returned are owned by the caller (copies), so plans can be reused freely.
"""

from __future__ import annotations

import os

import numpy as np


def _import_pyfftw():
    """pyfftw without its dask interface: pyfftw.interfaces imports dask.array when it can
    (about 1 s of start-up per process, for an interface this package never uses)."""
    import sys

    blocked = "dask.array.fft" not in sys.modules
    if blocked:
        sys.modules["dask.array.fft"] = None  # type: ignore[assignment] - import -> ImportError
    try:
        import pyfftw
    finally:
        if blocked:
            del sys.modules["dask.array.fft"]
    return pyfftw


try:  # pragma: no cover - exercised when pyfftw is installed (the default)
    pyfftw = _import_pyfftw()
    HAVE_PYFFTW = True
except ImportError:  # pragma: no cover
    pyfftw = None
    HAVE_PYFFTW = False


def default_threads() -> int:
    """FFT threads: $MEANFIELD_FFT_THREADS, else 1 (sweeps run one process per core)."""
    try:
        return max(1, int(os.environ.get("MEANFIELD_FFT_THREADS", "1")))
    except ValueError:
        return 1


class RealFFT:
    """Planned real-to-complex and complex-to-real transforms of length ``n``.

    Parameters
    ----------
    n : int
        Transform length.
    threads : int, optional
        FFTW threads (default :func:`default_threads`).
    backend : {"auto", "pyfftw", "scipy"}
        ``auto`` uses pyfftw when importable.
    planner : {"estimate", "measure"}
        FFTW planning. ``estimate`` (default) gives the same plan, hence the same bits, in
        every process; ``measure`` times candidate plans: ~20-40 % faster transforms at
        M >= 16384 here, but two processes may pick different plans and round-off
        differences then grow through the unstable linear phase (~1e-11 relative).
    """

    def __init__(self, n: int, threads: int | None = None, backend: str = "auto",
                 planner: str = "estimate") -> None:
        self.n = int(n)
        self.threads = threads or default_threads()
        if backend == "auto":
            backend = "pyfftw" if HAVE_PYFFTW else "scipy"
        if backend == "pyfftw" and not HAVE_PYFFTW:
            raise ValueError("backend: pyfftw is not installed; use 'scipy'")
        if backend not in ("pyfftw", "scipy"):
            raise ValueError(f"backend: must be auto, pyfftw or scipy (got {backend!r})")
        self.backend = backend
        if backend == "pyfftw":
            m = self.n // 2 + 1
            self._rin = pyfftw.empty_aligned(self.n, dtype="float64")
            self._cout = pyfftw.empty_aligned(m, dtype="complex128")
            self._cin = pyfftw.empty_aligned(m, dtype="complex128")
            self._padded_from = -1  # length of the data last written by forward_padded
            self._rout = pyfftw.empty_aligned(self.n, dtype="float64")
            if planner not in ("estimate", "measure"):
                raise ValueError(f"planner: must be estimate or measure (got {planner!r})")
            flags = (f"FFTW_{planner.upper()}", "FFTW_DESTROY_INPUT")
            # r2c preserves its input: a zero-padded tail stays zero between calls
            self._fwd = pyfftw.FFTW(self._rin, self._cout, direction="FFTW_FORWARD",
                                    flags=(flags[0],), threads=self.threads)
            self._bwd = pyfftw.FFTW(self._cin, self._rout, direction="FFTW_BACKWARD",
                                    flags=flags, threads=self.threads)
        else:
            import scipy.fft

            self._sfft = scipy.fft

    def forward(self, x: np.ndarray) -> np.ndarray:
        """rfft(x)."""
        if self.backend == "pyfftw":
            self._rin[:] = x
            self._padded_from = -1
            self._fwd.execute()
            return self._cout.copy()
        return self._sfft.rfft(x, workers=self.threads)

    def inverse(self, spec: np.ndarray, lo: int = 0, hi: int | None = None) -> np.ndarray:
        """irfft(spec, n)[lo:hi] with the 1/n normalisation."""
        if self.backend == "pyfftw":
            self._cin[:] = spec
            self._bwd.execute()
            return self._rout[lo:hi] * (1.0 / self.n)
        return self._sfft.irfft(spec, n=self.n, workers=self.threads)[lo:hi]

    def forward_padded(self, x: np.ndarray) -> np.ndarray:
        """rfft of x zero-padded to length n."""
        if self.backend == "pyfftw":
            self._rin[: x.size] = x
            if self._padded_from != x.size:
                self._rin[x.size :] = 0.0
                self._padded_from = x.size
            self._fwd.execute()
            return self._cout.copy()
        return self._sfft.rfft(x, n=self.n, workers=self.threads)

    def convolve(self, x: np.ndarray, multiplier: np.ndarray) -> np.ndarray:
        """irfft(multiplier * rfft(x)): one planned pair, no extra copies."""
        if self.backend == "pyfftw":
            self._rin[:] = x
            self._padded_from = -1
            self._fwd.execute()
            np.multiply(self._cout, multiplier, out=self._cin)
            self._bwd.execute()
            return self._rout * (1.0 / self.n)
        return self._sfft.irfft(self._sfft.rfft(x, workers=self.threads) * multiplier,
                                n=self.n, workers=self.threads)


def largest_prime_factor(n: int) -> int:
    n, p, largest = int(n), 2, 1
    while p * p <= n:
        while n % p == 0:
            n //= p
            largest = p
        p += 1
    return max(largest, n)


class CircularConvolution:
    """y_i = irfft(m * rfft(x))_i for one or several multipliers m, sharing one forward FFT.

    FFTW is fast for lengths whose prime factors have codelets (<= 13) but slow for lengths
    like 9999 = 3^2 * 11 * 101. For those the circulant is applied as a linear convolution
    with the periodically extended kernel, zero-padded to a fast length L >= 2n - 1
    (indices n-1 .. 2n-2 of the linear convolution are the circular one): two transforms
    of length ~2n instead of two slow ones of length n. Both paths agree to round-off.
    """

    def __init__(self, n: int, multipliers: list[np.ndarray], threads: int | None = None,
                 backend: str = "auto", planner: str = "estimate") -> None:
        self.n = int(n)
        self.padded = largest_prime_factor(self.n) > 13
        if not self.padded:
            self.length = self.n
            self.fft = RealFFT(self.n, threads, backend, planner)
            self.mults = [np.asarray(m, complex) for m in multipliers]
        else:
            import scipy.fft

            self.length = scipy.fft.next_fast_len(2 * self.n - 1, real=True)
            self.fft = RealFFT(self.length, threads, backend, planner)
            self.mults = []
            for m in multipliers:
                h = np.fft.irfft(np.asarray(m, complex), self.n)  # circulant kernel h_{i-j}
                g = np.zeros(self.length)
                g[: 2 * self.n - 1] = np.concatenate([h[1:], h])  # g_s = h_{(s-n+1) mod n}
                self.mults.append(np.fft.rfft(g))

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        fft = self.fft
        if not self.padded:
            if len(self.mults) == 1:
                return [fft.convolve(x, self.mults[0])]
            spec = fft.forward(x)
            return [fft.inverse(spec * m) for m in self.mults]
        spec = fft.forward_padded(x)
        n = self.n
        return [fft.inverse(spec * m, n - 1, 2 * n - 1) for m in self.mults]
