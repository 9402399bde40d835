import os
import subprocess
import sys

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")


def run_cli(*args: str, cwd=None, timeout: float = 300, env=None) -> subprocess.CompletedProcess:
    """Run the real ``meanfield`` entry point in a subprocess."""
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "meanfield.cli", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=timeout, env=full_env)


@pytest.fixture
def cli():
    return run_cli
