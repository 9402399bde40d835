"""Speed of the pseudo-spectral sphere solver (printed, never asserted).

For lmax = 63, 127, 255, 511 on the 3/2-rule grid: the cost of one right-hand side (USA and
SA, computed from scratch, i.e. including the synthesis of q) divided by the cost of one
scalar analysis + synthesis pair of shtns at the same size, measured in the same run; and
the cost of one full SSP-RK3 step (three right-hand sides plus the positivity check) per
right-hand side (consecutive steps: the first stage reuses the grid values synthesised
for the positivity check). Target: rhs / pair <= 6. shtns runs single-threaded unless
$MEANFIELD_FFT_THREADS says otherwise.
"""

from __future__ import annotations

import sys

from timing import best_time  # benchmarks/timing.py (script folder on sys.path)

from meanfield.initial import sphere as ins
from solvers.sphere import Spectral
from solvers.stepping import StepStats, advance


def clustered_state(solver: Spectral):
    x, phi = solver.grid()
    centres = [[1.0, 0.0, 0.0], [0.0, 0.6, 0.8], [0.0, -1.0, 0.2], [-0.5, 0.5, -0.7]]
    return ins.von_mises_fisher(x, phi, centres, kappa=20.0)


def table(degrees=(63, 127, 255, 511)) -> None:
    print(f"{'lmax':>5} {'grid':>10} {'model':>5} {'pair [ms]':>10} {'rhs [ms]':>9} "
          f"{'rhs/pair':>9} {'step/3 [ms]':>12} {'(step/3)/pair':>14}")
    for lmax in degrees:
        for model in ("usa", "sa"):
            s = Spectral(lmax, 5.0, model)
            q = s.split(clustered_state(s))
            grid = s.synthesise(q)
            sht = s.sht

            def pair(sht=sht, grid=grid):
                sht.synth(sht.analyse(grid))

            def rhs(s=s, q=q):
                s._cache = None  # from scratch: stages 2 and 3 of SSP-RK3 see new states
                s.rhs(q)

            state = {"q": q, "n": 0}

            def step(s=s, q=q, state=state):
                # consecutive steps, as in a run (the first stage reuses the synthesis of
                # the positivity check); restart every 20 steps so clusters stay resolved
                if state["n"] % 20 == 0:
                    state["q"] = q
                state["q"], _ = advance(s, state["q"], 0.0, 1.0, integrator=s.integrator,
                                        stats=StepStats(), max_steps=1)
                state["n"] += 1

            t_pair = best_time(pair)
            t_rhs = best_time(rhs)
            t_step = best_time(step, repeat=3) / 3
            print(f"{lmax:5d} {s.nlat:4d}x{s.nphi:<5d} {model:>5} {t_pair * 1e3:10.3f} "
                  f"{t_rhs * 1e3:9.3f} {t_rhs / t_pair:9.2f} {t_step * 1e3:12.3f} "
                  f"{t_step / t_pair:14.2f}", flush=True)


def main() -> int:
    table()
    return 0


if __name__ == "__main__":
    sys.exit(main())
