# Two commands do everything on a fresh machine:
#   make demo   - create .venv if missing, install the project (pinned), run the demo
#   make test   - same setup, then the linter (ruff) and the test suite
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.paddle-models-installed

.PHONY: setup demo test lint test-all clean-venv bench-twin bench-rec-peer faithful-e2e weights-parity

$(STAMP): setup.py requirements-lock.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -c requirements-lock.txt -e ".[test]"
	@touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(PY) tools/demo.py --json

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest -q tests

# ruff with the repo's ruff.toml (pinned in setup.py's test extra)
lint: $(STAMP)
	$(PY) -m ruff check .

# Optional: the PyTorch twin of benchmarks/multimodal_step.py in its own venv (about 5.6 GB: pip takes
# torch 2.14.1 / torchvision 0.29.1 from this machine's local wheels), then the benchmark with it.
TWIN := .venv-twin
$(TWIN)/.installed:
	$(PYTHON) -m venv $(TWIN)
	$(TWIN)/bin/pip install -q --disable-pip-version-check torch==2.14.1 torchvision==0.29.1 "transformers==4.57.6"
	@touch $@

bench-twin: $(STAMP) $(TWIN)/.installed
	$(PY) benchmarks/multimodal_step.py --torch-python $(TWIN)/bin/python

# Optional: the FuxiCTR side-by-side of benchmarks/rec_train.py in its own venv: the project (pinned) plus
# torch 2.14.1 (this machine's local CPU wheel) and fuxictr 2.3.10, whose own dependencies are pinned in
# benchmarks/requirements-rec-peer.txt. FUXICTR is a FuxiCTR checkout (its root or its model_zoo folder):
#   make bench-rec-peer FUXICTR=/path/to/FuxiCTR [REC_ARGS="--models widedeep --steps 50"]
PEER := .venv-rec-peer
FUXICTR ?=
REC_ARGS ?=
$(PEER)/.installed: setup.py requirements-lock.txt benchmarks/requirements-rec-peer.txt
	@test -x $(PEER)/bin/python || $(PYTHON) -m venv $(PEER)
	$(PEER)/bin/pip install -q --disable-pip-version-check -c requirements-lock.txt \
		-c benchmarks/requirements-rec-peer.txt -e . torch==2.14.1 fuxictr==2.3.10
	@touch $@

bench-rec-peer: $(PEER)/.installed
	@test -n "$(FUXICTR)" || { echo "usage: make bench-rec-peer FUXICTR=/path/to/FuxiCTR"; exit 2; }
	$(PEER)/bin/python benchmarks/rec_train.py --fuxictr "$(FUXICTR)" $(REC_ARGS)

# The faithful network (ERNIE-M base + ResNet-101) end to end on the MR2 sample item: tokenizer, train
# (baseline recipe, 2 steps), eval, export with parity, infer, and the server when tools/serve.py exists.
faithful-e2e: $(STAMP)
	$(PY) tools/faithful_e2e.py --out output/faithful_e2e --json

# PyTorch weights, exactly (docs/weights.md): random torchvision ResNet-101 / ernie-m-base (HF safetensors and
# pytorch_model.bin, a HF task model) / the whole PyTorch twin, converted with tools/convert_weights.py and loaded
# directly, must give torchvision's, transformers' and the twin's outputs within rel 1e-4; then one training
# step of the faithful config on the .pth and the HF folder (MR2 sample). Needs .venv-twin (built like bench-twin).
weights-parity: $(STAMP) $(TWIN)/.installed
	$(PY) tools/weights_parity.py --size full --train-step --torch-python $(TWIN)/bin/python \
		--out output/weights_parity --json

clean-venv:
	rm -rf $(VENV)
