# Two set-up-and-go commands: `make run` (main job) and `make test` (ruff + pytest).
# Each does the whole set-up on a fresh machine with Python 3.11, pip and a C compiler.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test bench lint setup clean fftw-headers

run: $(STAMP)
	$(PY) -m meanfield.mainjob

test: $(STAMP)
	$(VENV)/bin/ruff check .
	OPENBLAS_NUM_THREADS=1 $(PY) -m pytest -q tests

bench: $(STAMP)
	$(PY) benchmarks/bench_circle.py
	$(PY) benchmarks/bench_sweep.py
	$(PY) benchmarks/bench_particles.py
	$(PY) benchmarks/bench_sphere.py
	$(PY) benchmarks/bench_atoms.py
	$(PY) benchmarks/bench_attention.py
	$(PY) benchmarks/bench_causal.py
	$(PY) benchmarks/bench_phase.py
	$(PY) benchmarks/bench_ensemble.py

lint: $(STAMP)
	$(VENV)/bin/ruff check .

setup: $(STAMP)

# shtns compiles against FFTW: install its headers when missing (as root), else say what to install.
fftw-headers:
	@if [ -f /usr/include/fftw3.h ] || [ -f /usr/local/include/fftw3.h ]; then :; \
	elif [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing libfftw3-dev (FFTW headers for shtns) with apt-get"; \
		(apt-get install -y -q libfftw3-dev >/dev/null 2>&1 || \
		 (apt-get update -q >/dev/null && apt-get install -y -q libfftw3-dev >/dev/null)) || \
		{ echo "error: apt-get could not install libfftw3-dev; install the FFTW3 development headers by hand"; exit 1; }; \
	else \
		echo "error: FFTW3 headers (fftw3.h) not found: install libfftw3-dev (Debian/Ubuntu) or fftw-devel (Fedora), then rerun"; exit 1; \
	fi

$(VENV)/bin/python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found; set PYTHON=/path/to/python3.11"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip

# Reinstall only when the package metadata changed (editable install: source edits need nothing).
$(STAMP): pyproject.toml | $(VENV)/bin/python
	@$(MAKE) --no-print-directory fftw-headers
	$(VENV)/bin/pip install -q -e '.[dev]'
	@touch $(STAMP)

clean:
	rm -rf $(VENV) build *.egg-info
