"""The ``meanfield`` command. Bad input: one line on stderr, exit code 2, nothing written."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence

from meanfield._version import __version__
from meanfield.errors import InputError

EXIT_USAGE = 2


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
    from meanfield import theory_report
    from meanfield.checks import check_dim
    from meanfield.ranges import parse_range

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
        from meanfield.atomic import atomic_path

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
                       "gamma_runner_up/gamma_max (DESIGN.md section 2 conventions).")
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


#: sub-command registrars; later layers append theirs here
COMMANDS: list[Callable] = [_add_kmax, _add_info]


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
    except KeyboardInterrupt:
        print("meanfield: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
