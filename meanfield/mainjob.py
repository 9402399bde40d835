"""``make run``: the main job (default configuration -> data/run.h5, figures, analysis)."""

from __future__ import annotations

import sys
from pathlib import Path

from meanfield import config
from meanfield.analysis import summary_lines
from meanfield.driver import execute
from meanfield.plots import plot_run
from meanfield.reader import open_run


def main(out_dir: str = "data") -> int:
    out = Path(out_dir)
    cfg, text = config.resolve(None, [], str(out / "run.h5"))
    summary = execute(cfg, text, overwrite=True)
    print(summary.line())
    if summary.status != "complete":
        return 1
    with open_run(out / "run.h5") as run:
        res = run.analyze()
        files = plot_run(run, out / "figures", res)
    print("\n".join(summary_lines(res)))
    print("figures: " + ", ".join(files))
    return 0


if __name__ == "__main__":
    sys.exit(main())
