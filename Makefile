# The README's two commands: `make demo` and `make test`. Both create .venv and install
# what they need; the CPU build of torch is installed first so no CUDA build is pulled.
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: venv demo test bench data-smoke data-train data-heldout data-default train-default verify-default \
        evaluate-default heldout-factors compare llzo-timing real-run ood clean

$(STAMP): pyproject.toml setup.py
	test -x $(BIN)/python || $(PY) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip "setuptools>=77" wheel
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[test,mpr,train]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/lisentry demo

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

# ---- data, the default model and its evaluation (long: not part of the tests) ----
data/smoke: | $(STAMP)
	$(BIN)/lisentry datasets build configs/dataset-smoke.yaml --out $@
data/train: | $(STAMP)
	$(BIN)/lisentry datasets build configs/dataset-train.yaml --out $@
data/heldout: | $(STAMP)
	$(BIN)/lisentry datasets build configs/dataset-heldout.yaml --out $@
data/default: | $(STAMP)
	$(BIN)/lisentry datasets build configs/dataset-default.yaml --out $@
data-smoke: data/smoke
data-train: data/train
data-heldout: data/heldout
data-default: data/default

train-default: data/train
	$(BIN)/lisentry train configs/train-default.yaml

evaluate-default: data/train data/heldout
	$(BIN)/lisentry evaluate models/default data/train --split test --out docs/results/eval-test.json
	$(BIN)/lisentry evaluate models/default data/heldout --out docs/results/eval-heldout.json

# What the held-out field and SNR cost, apart from the draw of runs: the held-out runs (same seed)
# rebuilt at the training field/SNR (control), with only the field or only the SNR outside it.
data/heldout-%: | $(STAMP)
	$(BIN)/lisentry datasets build configs/dataset-heldout-$*.yaml --out $@
heldout-factors: data/heldout-control data/heldout-field data/heldout-snr
	for k in control field snr; do \
	    $(BIN)/lisentry evaluate models/default data/heldout-$$k --out docs/results/eval-heldout-$$k.json; done

# Li | LLZO | Li runs whose dendrites come at other charges than in training, and their control
# (same runs, training range): does a model call plating from the spectrum or the charge passed?
llzo-timing: data/train data/heldout-llzo-timing data/heldout-llzo-control
	$(BIN)/python benchmarks/compare_models.py data/train --only features_hgb --model models/default \
	    --also llzo_control=data/heldout-llzo-control --also llzo_timing=data/heldout-llzo-timing \
	    --out docs/results/hgb-gap/llzo-timing.json

compare: data/train data/heldout
	$(BIN)/python benchmarks/compare_models.py data/train --model models/default --also heldout=data/heldout --out docs/results/compare.json

# The default model on the one real run beside the project (its start is in the .mpr files).
REAL ?= ../shared/real/li_li_tegdme_operando
real-run: $(STAMP)
	$(BIN)/lisentry label $(REAL)/nmr --echem $(REAL)/echem/*_03_GCPL_C05.txt \
	    --echem-start 2023-08-11T12:40:15+01:00 --out docs/results/real_run_labels.csv --plot

ood: $(STAMP)
	$(BIN)/python benchmarks/ood_eval.py --model models/default --out docs/results/ood.json

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_read.py
	$(BIN)/python benchmarks/bench_build.py
	$(BIN)/python benchmarks/bench_detector.py

clean:
	rm -rf $(VENV) build dist *.egg-info

# The shipped bundle is what `make train-default` gives: same training data, and (with the
# retrain, ~14 min: two networks side by side, then their current-free fine-tunes) the same
# weights, tensor by tensor.
verify-default: data/train
	$(BIN)/python benchmarks/verify_default.py --retrain
