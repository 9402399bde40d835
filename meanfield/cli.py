"""The ``meanfield`` command. Bad input: one line on stderr, exit code 2, nothing written."""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Sequence

from meanfield._version import __version__
from meanfield.ensemble import DEFAULT_BATCH
from meanfield.theory.errors import InputError

EXIT_USAGE = 2
EXIT_FAILED_RUN = 1   # analyze: the run failed (its file says why)
EXIT_UNFINISHED = 3   # analyze: the run is unfinished (running or interrupted)


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage block) and exit code 2."""

    def error(self, message: str):  # type: ignore[override]
        raise InputError(self.prog, message)


def _beta_value(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise InputError("--beta", "must be a finite number >= 0", text) from None
    if not (v >= 0 and v != float("inf")):
        raise InputError("--beta", "must be a finite number >= 0", text)
    return v


def _cmd_kmax(args: argparse.Namespace) -> int:
    from meanfield import kmax_report as theory_report
    from meanfield.ranges import parse_range
    from meanfield.theory.checks import check_dim

    try:
        dim = check_dim(args.dim, "--dim")
    except InputError:
        raise InputError("--dim", "must be an integer >= 2 (S^{d-1} with d >= 2)",
                         args.dim) from None
    betas = [_beta_value(b) for b in args.beta or []]
    if args.beta_range:
        betas += parse_range(args.beta_range, "--beta-range")
    if not betas:
        raise InputError("--beta", "give --beta B (repeatable) or --beta-range START:STOP:STEP")
    if args.time_unit == "scaled" and args.model != "usa":
        raise InputError("--time-unit", "'scaled' applies to --model usa only")
    if args.plot and not args.plot.lower().endswith((".png", ".pdf", ".svg")):
        raise InputError("--plot", "must be a file name ending in .png, .pdf or .svg", args.plot)
    sels = theory_report.selections(betas, dim, args.model, args.time_unit)
    if args.json:
        print(json.dumps([s.as_dict() for s in sels], allow_nan=False))
    else:
        print(theory_report.table(sels))
    if args.plot:
        from meanfield.io.atomic import atomic_path

        with atomic_path(args.plot) as tmp:
            theory_report.plot(sels, str(tmp), staircase=args.beta_range is not None)
        if not args.json:
            print(f"figure written to {args.plot}")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from meanfield.backends import backend_report

    print(f"meanfield-pde {__version__}")
    for line in backend_report():
        print(line)
    return 0


def _add_kmax(sub) -> None:
    p = sub.add_parser("kmax", help="most unstable mode k_max and growth rates for given beta",
                       description="Table of k_max, gamma_max, runner-up mode and "
                       "gamma_runner_up/gamma_max (conventions: docs/conventions.md §6).")
    p.add_argument("--beta", action="append", metavar="B", help="inverse temperature (repeat)")
    p.add_argument("--beta-range", metavar="START:STOP:STEP",
                   help="beta = START, START+STEP, ... < STOP")
    p.add_argument("--dim", default="2", metavar="D", help="ambient dimension d (S^{d-1}), >= 2")
    p.add_argument("--model", choices=["usa", "sa"], default="usa")
    p.add_argument("--time-unit", choices=["raw", "scaled"], default="raw",
                   help="rates per raw time, or per scaled time (kernel e^{beta(t-1)}/beta)")
    p.add_argument("--json", action="store_true", help="print one JSON array")
    p.add_argument("--plot", metavar="FILE.png", help="write the growth-rate figure")
    p.set_defaults(func=_cmd_kmax)


def _add_info(sub) -> None:
    p = sub.add_parser("info", help="package version and available backends")
    p.set_defaults(func=_cmd_info)


def _cmd_run(args: argparse.Namespace) -> int:
    from meanfield.driver import run_cli

    if args.resume and (args.config or args.set or args.output):
        raise InputError("--resume", "takes only the run file (no CONFIG, --set or -o)")
    return run_cli(args.config, args.set or [], args.output, resume=args.resume,
                   overwrite=args.overwrite, quiet=args.quiet)


def _cmd_analyze(args: argparse.Namespace) -> int:
    from meanfield.analysis import summary_lines
    from meanfield.io.reader import open_run
    from meanfield.phase import is_phase_file

    if is_phase_file(args.file):  # a phase diagram (meanfield phase)
        from meanfield import phase

        res = phase.analyze_phase(args.file)
        print(json.dumps(_finite(res), allow_nan=False) if args.json
              else "\n".join(phase.summary_lines(res)))
        return 0
    with open_run(args.file) as run:
        res = run.analyze()
    if args.json:
        print(json.dumps(_finite(res), allow_nan=False))
    else:
        print("\n".join(summary_lines(res)))
    if args.any_status:
        return 0
    return {"complete": 0, "failed": EXIT_FAILED_RUN}.get(res["status"], EXIT_UNFINISHED)


def _oserror_line(exc: OSError) -> str:
    """One line for an I/O error: the file, if known, and the library's first line."""
    text = " ".join(str(exc).split())
    where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
    return f"{where}cannot read or write: {text[:300]}"


def _finite(obj):
    """JSON has no NaN/inf: report a non-finite number as null."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _cmd_plot(args: argparse.Namespace) -> int:
    from pathlib import Path

    from meanfield.io.reader import open_run
    from meanfield.plots import plot_run

    target = Path(args.target)
    if target.is_dir():
        from meanfield.plots import plot_sweep
        from meanfield.sweep import is_sweep_dir

        if not is_sweep_dir(target):
            raise InputError("DIR", "is not a sweep folder (no sweep.json)", args.target)
        for f in plot_sweep(target, args.output):
            print(f)
        return 0
    out = args.output or str(target.parent / "figures")
    from meanfield.phase import is_phase_file, plot_phase

    if is_phase_file(target):
        for f in plot_phase(target, out):
            print(f)
        return 0
    with open_run(target) as run:
        files = plot_run(run, out, time_axis=args.time_axis)
    for f in files:
        print(f)
    return 0


def _add_run(sub) -> None:
    p = sub.add_parser("run", help="run a configuration to an HDF5 file",
                       description="Run CONFIG.toml (defaults when omitted) and write one HDF5 "
                       "file. Progress bar on a terminal; exit 0 complete, 1 failed, 2 bad "
                       "input, 75 interrupted (resumable).")
    p.add_argument("config", nargs="?", metavar="CONFIG.toml")
    p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                   help="override a config key (repeatable)")
    p.add_argument("-o", "--output", metavar="PATH", help="output file (output.path)")
    p.add_argument("--resume", metavar="PATH", help="continue the run whose output is PATH")
    p.add_argument("--overwrite", action="store_true", help="start again even if PATH exists")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_run)


def _add_analyze(sub) -> None:
    p = sub.add_parser("analyze", help="metastability analysis of a run file",
                       description="Analyse a run file (also a PATH.checkpoint of an "
                       "unfinished run). Exit 0 for a complete run, 1 for a failed run, 3 for "
                       "an unfinished one (status and message are printed either way), 2 for "
                       "bad input; --any-status exits 0 whatever the run's status.")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--any-status", action="store_true",
                   help="exit 0 for failed and unfinished runs too")
    p.set_defaults(func=_cmd_analyze)


def _add_plot(sub) -> None:
    p = sub.add_parser("plot", help="figures of a run file or a sweep folder (PNG)")
    p.add_argument("target", metavar="FILE|DIR")
    p.add_argument("-o", "--output", metavar="DIR", help="figure folder (default FILE's "
                   "folder/figures)")
    p.add_argument("--time-axis", choices=["auto", "linear", "log"], default="auto",
                   help="time axis of the space-time and cluster figures (auto: log when the "
                   "outputs are log-spaced or the dynamics span decades)")
    p.set_defaults(func=_cmd_plot)


def _cmd_config(args: argparse.Namespace) -> int:
    from meanfield import config

    cfg, _ = config.resolve(args.config, args.set or [])
    print(config.dumps(cfg, comments=True), end="")
    return 0


def _add_config(sub) -> None:
    p = sub.add_parser("config", help="print the full, documented configuration",
                       description="Print every key with its value and documentation: the "
                       "defaults, or CONFIG.toml with --set overrides applied (validated).")
    p.add_argument("config", nargs="?", metavar="CONFIG.toml")
    p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE")
    p.set_defaults(func=_cmd_config)


def _cmd_sweep(args: argparse.Namespace) -> int:
    from meanfield.sweep import sweep_cli

    return sweep_cli(args)


def _positive_int(name: str):
    def conv(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise InputError(name, "must be an integer >= 1", text) from None
        if v < 1:
            raise InputError(name, "must be an integer >= 1", text)
        return v
    return conv


def _add_sweep(sub) -> None:
    p = sub.add_parser("sweep", help="run a parameter sweep (Cartesian product)",
                       description="One HDF5 file per run in DIR plus sweep.json and a summary "
                       "table. Ranges START:STOP:STEP exclude STOP (like range). Re-running "
                       "skips complete runs, resumes interrupted ones and retries failures.")
    p.add_argument("config", nargs="?", metavar="CONFIG.toml")
    p.add_argument("--param", action="append", metavar="KEY=START:STOP:STEP|v1,v2,...",
                   help="a swept config key (repeatable)")
    p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                   help="override a base config key (repeatable)")
    p.add_argument("-o", "--output", required=True, metavar="DIR")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--jobs", type=_positive_int("--jobs"), metavar="N",
                   help="local processes (default: one per core; 1 = in-process)")
    g.add_argument("--scheduler", metavar="ADDRESS", help="Dask scheduler, tcp://host:port")
    g.add_argument("--dask-local", type=_positive_int("--dask-local"), metavar="N",
                   help="start a Dask LocalCluster with N workers")
    p.add_argument("--ensemble", type=int, nargs="?", default=DEFAULT_BATCH,
                   const=DEFAULT_BATCH, metavar="N",
                   help="advance compatible runs (circle fv2 with the convolution drift, with "
                   "or without atoms) N at a time in one batched stepper per task (default "
                   f"meanfield.ensemble.DEFAULT_BATCH = {DEFAULT_BATCH}); 0: one run per task "
                   "with the schemes' own steppers")
    p.add_argument("--overwrite", action="store_true", help="run everything again")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_sweep)


def _matrix_arg(text: str, name: str):
    """A matrix given as TOML/JSON nested lists, or a .npy file."""
    import numpy as np

    from meanfield.config import parse_value

    if text.endswith(".npy"):
        try:
            return np.load(text, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise InputError(name, f"must be a readable numeric .npy file ({exc})",
                             text) from None
    value = parse_value(text)
    try:
        arr = np.array(value, dtype=float)
    except (TypeError, ValueError):
        arr = None
    if arr is None or arr.ndim != 2:
        raise InputError(name, "must be a matrix: nested lists like [[1, 0], [0, 2]] or a "
                         ".npy file", text)
    return arr


def _cmd_attention(args: argparse.Namespace) -> int:
    import numpy as np

    from meanfield.theory.attention import attention_matrices, attention_report

    if args.ensemble:
        at = attention_matrices(args.ensemble, int(args.dim), args.scale, args.seed)
        b, v = at.A, at.V
    else:
        if args.V is None or (args.B is None and (args.Q is None or args.K is None)):
            raise InputError("--B", "give --B and --V, or --Q, --K and --V, or --ensemble")
        b = _matrix_arg(args.B, "--B") if args.B is not None else \
            _matrix_arg(args.Q, "--Q").T @ _matrix_arg(args.K, "--K")
        v = _matrix_arg(args.V, "--V")
    rep = attention_report(b, v)
    out = rep.as_dict()
    if args.beta is not None and np.allclose(b, np.eye(b.shape[0])) \
            and np.allclose(v, np.eye(b.shape[0])):
        from meanfield.theory.growth import growth_rate

        ks = np.arange(1, 9)
        out["isotropic_sa_rates"] = {int(k): float(growth_rate(k, args.beta, b.shape[0], "sa"))
                                     for k in ks}
    if args.json:
        print(json.dumps(out, allow_nan=False))
        return 0
    fmt = np.array2string
    print(f"A = V B^T, d = {out['d']}: A1 (B invertible) {out['A1_B_invertible']}, "
          f"A2 (A symmetric) {out['A2_A_symmetric']}")
    print(f"eigenvalues of A: {fmt(rep.mu, precision=6)}; mu_1 = {rep.mu[0]:.6g}, "
          f"k = dim E = {rep.multiplicity}, gap gamma = {rep.gap:.6g}")
    print(f"E (rows):     {fmt(rep.E.T, precision=6)}")
    print(f"F (V, largest eigenvalue):  {fmt(rep.F.T, precision=6)}")
    print(f"F_abs (V, largest modulus): {fmt(rep.F_abs.T, precision=6)}")
    print(f"sigma_min(B) = {rep.sigma_min:.6g}, sigma_max(B) = {rep.sigma_max:.6g}; "
          f"collapse rate gamma/sigma_max(B) = {rep.collapse_rate():.6g} (p = 1)")
    if out["circle_w2_rate"] is not None:
        print(f"circle, zero temperature: exact W_2 rate {out['circle_w2_rate']:.6g}")
    if "isotropic_sa_rates" in out:
        rates = ", ".join(f"{k}: {g:.6g}" for k, g in out["isotropic_sa_rates"].items())
        print(f"B = V = I: SA growth rates k^2 I_k(beta)/(beta I_0(beta)): {rates}")
    return 0


def _add_attention(sub) -> None:
    p = sub.add_parser("attention", help="spectral data of general attention matrices "
                       "(seed 004: A = V B^T, E, F, gap, rates)",
                       description="Theory of the low-temperature regime (docs/conventions.md "
                       "§3): from B = Q^T K and V, the top eigenspace E of A = V B^T, its "
                       "gap, the top eigenspaces F and F_abs of V, the singular values of B "
                       "and the predicted rates.")
    p.add_argument("--B", metavar="MATRIX", help="B = Q^T K as [[..], [..]] or a .npy file")
    p.add_argument("--Q", metavar="MATRIX")
    p.add_argument("--K", metavar="MATRIX")
    p.add_argument("--V", metavar="MATRIX")
    p.add_argument("--ensemble", choices=["identity", "gaussian", "orthogonal", "symmetric-psd"],
                   help="draw Q, K, V from a named ensemble")
    p.add_argument("--dim", default=2, type=_positive_int("--dim"))
    p.add_argument("--scale", default=1.0, type=float)
    p.add_argument("--seed", default=0, type=int)
    p.add_argument("--beta", type=_beta_value, help="also the isotropic SA rates (B = V = I)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_cmd_attention)


def _cmd_compare(args: argparse.Namespace) -> int:
    from meanfield.compare import compare

    res = compare(args.run_a, args.run_b, every=args.every, system_a=args.system_a,
                  system_b=args.system_b)
    if args.json:
        print(json.dumps(res, allow_nan=False))
        return 0
    print(f"W_2 ({res['cost']}) between {res['run_a']} and {res['run_b']}")
    print(f"{'t':>12} {'W_2':>14}")
    for t, w in zip(res["times"], res["w2"], strict=True):
        print(f"{t:12.6g} {w:14.6e}")
    return 0


def _add_compare(sub) -> None:
    p = sub.add_parser("compare", help="W_2 between two runs at their common output times",
                       description="Chordal W_2 (seed 004's cost |x - y|^2, exact discrete "
                       "optimal transport by POT) between two runs (circle densities with "
                       "their atoms, particle runs) at every output time they share.")
    p.add_argument("run_a", metavar="RUN_A")
    p.add_argument("run_b", metavar="RUN_B")
    p.add_argument("--every", type=_positive_int("--every"), default=1,
                   help="use every N-th common time")
    p.add_argument("--system-a", type=int, default=0, help="system of a particle batch")
    p.add_argument("--system-b", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_cmd_compare)


#: sub-command registrars; later layers append theirs here
COMMANDS: list[Callable] = [_add_kmax, _add_info, _add_config, _add_run, _add_analyze,
                            _add_plot, _add_sweep, _add_attention, _add_compare]


def _add_phase(sub) -> None:
    from meanfield.phase import add_parser

    add_parser(sub)


COMMANDS.append(_add_phase)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="meanfield", description="Mean-field self-attention dynamics on "
                     "the circle and the sphere.")
    parser.add_argument("--version", action="version", version=f"meanfield-pde {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return EXIT_USAGE
        return int(args.func(args) or 0)
    except InputError as exc:
        print(f"meanfield: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # unreadable input: a corrupt HDF5 chunk, a vanished file, ...
        print(f"meanfield: error: {_oserror_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("meanfield: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
