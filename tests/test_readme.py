"""The README's Python examples run as written (the circle solver with a drift, the theory
one-liners), and their comments state what they return."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def _block(header: str) -> str:
    """The first ```python block after the line ``header``."""
    start = README.index(header)
    m = re.compile(r"```python\n(.*?)```", re.S).search(README, start)
    return m.group(1)


def test_theory_one_liners_return_what_the_comments_say():
    ns: dict = {}
    code = _block("## k_max for your beta in one line")
    exec(code, ns)
    mf = ns["mf"]
    assert mf.most_unstable_mode(5.0) == 3
    assert mf.growth_rate(3, 5.0) == pytest.approx(18.59607, abs=1e-5)
    assert mf.growth_rate(3, 5.0, dim=3) == pytest.approx(9.97809, abs=1e-5)
    sel = ns["sel"]
    assert (sel.k_max, sel.k_runner_up) == (4, 3) and sel.gamma_ratio == pytest.approx(0.9394,
                                                                                   abs=1e-4)


def test_circle_example_with_the_default_and_a_plugged_in_drift():
    ns: dict = {}
    exec(_block("## Solving the PDE on the circle"), ns)
    res = ns["res"]
    assert res.density.shape == (61, 4096)
    from meanfield.analysis import analyze

    out = analyze(res, beta=5.0)  # the in-memory result, as the README's analysis section says
    assert out["dominant_mode_at_exit"] == 3 and out["final_clusters"] == 3
    assert abs(res.diagnostics["mass"][-1] - 1.0) < 1e-13  # white noise is normalised
    rot = ns["rot"]
    out = rot.run(ns["initial"].mode(512, 2, 0.05), t_end=1.0)
    exact = ns["initial"].mode(512, 2, 0.05, phase=-2 * 0.7)
    assert np.sum(np.abs(out.density[-1] - exact)) * 2 * np.pi / 512 < 2e-4


def _fenced(header: str, lang: str) -> str:
    """The first ```lang block after the line ``header``."""
    start = README.index(header)
    m = re.compile(rf"```{lang}\n(.*?)```", re.S).search(README, start)
    return m.group(1)


def test_attention_section_commands_run_as_written(cli, tmp_path):
    """The [attention] TOML block and the sh lines of the seed-004 section, as written (the
    TOML saved as my.toml, with a short t_end): attention table and JSON, a circle run, the
    zero-temperature particle run, compare."""
    import json
    import shlex

    header = "## General attention (Q, K, V) and zero temperature (seed 004)"
    toml = _fenced(header, "toml")
    (tmp_path / "my.toml").write_text(toml + "\n[discretization]\ncells = 256\n[time]\n"
                                      "t_end = 2.0\nn_outputs = 5\n")
    lines = _fenced(header, "sh").replace("\\\n", " ").strip().splitlines()
    outputs = []
    for line in lines:
        args = shlex.split(line.split("#")[0])
        assert args[0] == ".venv/bin/meanfield"
        res = cli(*args[1:], *(["--quiet"] if args[1] == "run" else []), cwd=tmp_path)
        assert res.returncode == 0, (line, res.stderr)
        outputs.append(res.stdout)
    assert "gap gamma = 1" in outputs[0]
    assert json.loads(outputs[1])["d"] == 10
    assert (tmp_path / "g.h5").exists() and (tmp_path / "p.h5").exists()
    assert "W_2" in outputs[-1] and len(outputs[-1].splitlines()) == 2 + 5


def test_causal_section_commands_run_as_written(cli, tmp_path):
    """The sh lines of the causal section, as written (default t_end = 1)."""
    import shlex

    lines = _fenced("## Causal attention: a mean field over token labels (seed 002)",
                    "sh").replace("\\\n", " ").strip().splitlines()
    for line in lines:
        args = shlex.split(line.split("#")[0])
        res = cli(*args[1:], *(["--quiet"] if args[1] == "run" else []), cwd=tmp_path)
        assert res.returncode == 0, (line, res.stderr)
    assert (tmp_path / "causal.h5").exists()


def test_frozen_centres_commands_run_as_written(cli, tmp_path):
    """The [frozen] TOML and sh lines of the causal section, as written: every token of
    notes-002 V13 ends captured by a centre."""
    import shlex

    header = "### General Q, K, V, frozen centres and token order"
    (tmp_path / "frozen.toml").write_text(_fenced(header, "toml"))
    out = []
    for line in _fenced(header, "sh").strip().splitlines():
        args = shlex.split(line.split("#")[0])
        res = cli(*args[1:], *(["--quiet"] if args[1] == "run" else []), cwd=tmp_path)
        assert res.returncode == 0, (line, res.stderr)
        out.append(res.stdout)
    assert "captured at the end 1.000" in out[-1]


def test_phase_section_commands_run_as_written(cli, tmp_path):
    """The sh lines of the phase-diagram section, as written."""
    import shlex

    out = []
    for line in _fenced("## Phase diagrams in (t, beta) (seed 001)", "sh").strip().splitlines():
        args = shlex.split(line.split("#")[0])
        res = cli(*args[1:], *(["--quiet"] if args[1] == "phase" else []), cwd=tmp_path)
        assert res.returncode == 0, (line, res.stderr)
        out.append(res.stdout)
    assert "Gamma t*" in out[1] and (tmp_path / "figures" / "phase_phase.png").exists()


def test_staircase_section_runs_as_written_in_bash(tmp_path):
    """The staircase block through bash (heredoc included), the venv's meanfield on PATH."""
    import os
    import subprocess
    import sys

    block = _fenced("## The energy staircase (seed 000)", "sh")
    venv = Path(sys.executable).parent
    (tmp_path / ".venv").symlink_to(venv.parent)
    res = subprocess.run(["bash", "-e", "-c", block], cwd=tmp_path, capture_output=True,
                         text=True, env=dict(os.environ, MEANFIELD_NO_PROGRESS="1"),
                         timeout=600)
    assert res.returncode == 0, res.stderr
    assert "Ebar plateaus 0.2138, 0.28, 0.44, 0.52, 1" in res.stdout
    assert (tmp_path / "figures" / "staircase_staircase.png").exists()
