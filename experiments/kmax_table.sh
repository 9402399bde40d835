#!/usr/bin/env bash
# k_max(beta) staircases and growth-rate curves on S^1 and S^2 (seed 003, Fig. 1).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p data/experiments
.venv/bin/meanfield kmax --beta-range 0.5:40:0.5 --plot data/experiments/kmax_circle.png
.venv/bin/meanfield kmax --beta-range 0.5:40:0.5 --dim 3 --plot data/experiments/kmax_sphere.png
