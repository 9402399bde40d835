"""``make run``: the main job. For now the k_max report on S^1 and S^2 (written to data/)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from meanfield import theory_report
from meanfield.atomic import atomic_path, write_text_atomic
from meanfield.growth import kmax_transitions


def main(out_dir: str = "data") -> int:
    out = Path(out_dir)
    betas = [round(float(b), 10) for b in np.arange(0.5, 30.0 + 1e-9, 0.5)]
    for dim in (2, 3):
        sels = theory_report.selections(betas, dim, "usa")
        print(theory_report.table(sels))
        trans = kmax_transitions(dim, 8)
        print("k_max steps up at beta = " + ", ".join(
            f"{b:.4f} ({k}->{k + 1})" for k, b in enumerate(trans, start=1)) + "\n")
        write_text_atomic(out / f"kmax_d{dim}.json",
                          json.dumps([s.as_dict() for s in sels], allow_nan=False, indent=1))
        with atomic_path(out / f"kmax_d{dim}.png") as tmp:
            theory_report.plot(sels, str(tmp), staircase=True)
    print(f"wrote {out}/kmax_d2.json, kmax_d2.png, kmax_d3.json, kmax_d3.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
