# Two commands on a fresh machine: `make demo` (the main job) and `make test` (the test suite).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo test test-quick lint bench install

$(VENV)/.installed: pyproject.toml constraints.txt
	@# data from Debian's packages: the demo's real photos (labelme-examples) and Fashion-MNIST (the
	@# Diff-JSCC model's data); without root or apt the demo notes and skips what is missing
	@for pkg in labelme-examples dataset-fashion-mnist; do \
		dpkg -s $$pkg >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		(apt-get install -y -q $$pkg >/dev/null 2>&1 || (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q $$pkg >/dev/null 2>&1)) ; } || \
		echo "note: $$pkg not installed (sudo apt-get install $$pkg); the demo will skip what needs it"; done
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e ".[test]"
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/gensemcom demo --out out/demo

test: $(VENV)/.installed
	$(PY) -m pytest -q

test-quick: $(VENV)/.installed
	$(PY) -m pytest -q -m "not slow"

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .

bench: $(VENV)/.installed
	$(PY) benchmarks/bench_sampling.py
	$(PY) benchmarks/bench_sweep.py
