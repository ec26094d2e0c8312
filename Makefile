# Two entry points for a fresh machine: `make train` and `make test`.
# Both create .venv on first use with the CPU build of torch and losskit in editable mode.
# Tests run one torch thread per xdist worker: tiny tensors lose to thread contention.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch==2.13.0 resolves to the CPU wheel these machines hold on disk; an unpinned `torch` would
# download a multi-GB CUDA build. On a GPU machine: `make TORCH=torch test`.
TORCH ?= torch==2.13.0

.PHONY: train test lint typecheck docs screenshots fuzz mutate gallery

$(BIN)/losskit: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[dev]"
	$(BIN)/pip install -q -e ".[trl]"  # after dev: see pyproject.toml's `trl` extra
	touch $@

train: $(BIN)/losskit
	$(BIN)/losskit train

test: $(BIN)/losskit
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n 2 -q

lint: $(BIN)/losskit
	$(BIN)/ruff check .

# mypy on losskit/ with check_untyped_defs ([tool.mypy] in pyproject.toml).
typecheck: $(BIN)/losskit
	$(BIN)/mypy

# The documentation site into site/ (open site/index.html), offline, strict: a broken link or
# cross-reference, or a docstring that fails to render, fails the build.
docs: $(BIN)/losskit
	NO_MKDOCS_2_WARNING=1 PYTHONPATH=. $(BIN)/mkdocs build --strict --quiet

# Retake docs/images/api-cross-entropy.png and loss-table.png (needs Debian's chromium; not in CI).
screenshots: docs
	bash docsgen/screenshots.sh

# Differential fuzzing against torch, long budget: LOSSKIT_FUZZ_EXAMPLES calls per loss through
# pytest (shrinks the first failure), then a survey that counts every outcome without stopping.
FUZZ_EXAMPLES ?= 2000
fuzz: $(BIN)/losskit
	OMP_NUM_THREADS=1 LOSSKIT_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/python -m pytest -n 2 -q tests/test_fuzz.py
	OMP_NUM_THREADS=1 PYTHONPATH=. $(BIN)/python tests/test_fuzz.py $(FUZZ_EXAMPLES)

# Mutation testing of the core (cosmic-ray), not part of `make test` or CI: about 30 minutes on
# 2 cores for the default sample. Survivors go to benchmarks/mutation.md; sessions in mutants/.
# Measured (issue 16, 2 busy cores shared with other jobs): 5 mutants per module (85 in all)
# took 666 s plus about 2 minutes to build the sessions; each module's test command runs in
# 13-32 s. A seed draws the same mutants on every fresh run. More flags in MUTATE_ARGS, e.g.
# "--seed 1 --fresh", or "--fresh --replay REPORT" (only the survivors REPORT lists).
MUTATE_BUDGET ?= 1800
MUTATE_PER_MODULE ?= 12
mutate: $(BIN)/losskit
	$(BIN)/pip install -q "cosmic-ray>=8.4"
	OMP_NUM_THREADS=1 $(BIN)/python benchmarks/mutate.py --budget $(MUTATE_BUDGET) \
		--per-module $(MUTATE_PER_MODULE) --workers 2 $(MUTATE_ARGS)

# Every loss's curves by family, and docs/gallery.md, from the registry (commit the result).
gallery: $(BIN)/losskit
	$(BIN)/losskit gallery
