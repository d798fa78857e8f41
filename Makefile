# Two commands on a fresh machine:  make demo   and   make test
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# The tested versions (constraints.txt) for every target; .venv-latest holds the newest within pyproject's ranges.
LATEST := .venv-latest

.PHONY: demo study reproduce-synthetic flip-study test test-all test-latest lock lint format bench gpu clean-venv

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints.txt pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	@touch $(STAMP)

STAGE1 := logs/premise/stage1.ckpt

## The CPU demo: the two-stage benchmark with the paper's premise (docs/premise.md). Stage 1 pretrains
## the tiny CLIP on salient captions (made once: delete $(STAGE1) to remake it), the premise is
## measured, stage 2 fine-tunes it with LSDO (variant=average) and prints the test metrics.
demo: $(STAMP)
	@test -f $(STAGE1) || $(PY) train.py experiment=premise_stage1
	$(VENV)/bin/lsdo-premise ckpt=$(STAGE1)
	$(PY) train.py experiment=premise

## The premise study: every variant x both frame-attention forms x 3 seeds (about 75 min on 2 cores; resumable).
study: $(STAMP)
	$(PY) bench/premise_study.py

## The paper's Tables VII and XI at synthetic scale, 3 seeds, with lsdo-report and Fig. 5 / 7 / 8 into docs/
## (about 100 min on 2 cores; resumable: docs/reproduce-synthetic.md).
reproduce-synthetic: $(STAMP)
	$(PY) bench/reproduce_synthetic.py

## The flip study (issue 17): dataset.flip none / plain / caption_aware on the flip benchmark, 5 seeds, 60 epochs (15 runs, about 75 min on 2 cores; resumable).
flip-study: $(STAMP)
	$(PY) bench/flip_study.py docs=docs/flip_study

## The default test suite (no slow tests).
test: $(STAMP)
	$(PY) -m pytest -m "not slow" -q

## The default suite on the newest releases pyproject's ranges admit (a fresh $(LATEST), no constraints).
test-latest:
	rm -rf $(LATEST) && $(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/python -m pip install --quiet --upgrade pip
	$(LATEST)/bin/python -m pip install --quiet --upgrade --upgrade-strategy eager -e ".[dev]"
	$(LATEST)/bin/python -m pip freeze --all --exclude-editable
	$(LATEST)/bin/python -m pytest -m "not slow" -q

## After test-latest passes: its versions become constraints.txt (the header kept).
lock:
	@test -x $(LATEST)/bin/python || { echo "make lock: run make test-latest first"; exit 2; }
	grep '^#' constraints.txt > constraints.new
	$(LATEST)/bin/python -m pip freeze --all --exclude-editable | sort -f >> constraints.new
	mv constraints.new constraints.txt

## Everything, slow tests included.
test-all: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format . && $(VENV)/bin/ruff check --fix .

bench: $(STAMP)
	$(PY) bench/train_step.py

## Everything that needs a GPU (bench/gpu.sh): one markdown report under logs/bench/; stops at once without CUDA.
gpu: $(STAMP)
	PY=$(PY) bash bench/gpu.sh

clean-venv:
	rm -rf $(VENV)
