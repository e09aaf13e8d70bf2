# Two entry points, each setting itself up on a fresh clone:
#   make demo   train the demo captioner on built-in shapes (CPU, a few minutes), caption held-out images,
#               print test metrics
#   make test   run the whole test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
DEMO   := runs/demo
CKPT   := $(DEMO)/checkpoints/best.ckpt

.PHONY: demo test setup lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python train.py fit --config configs/demo/shapes_caption_vit.yaml
	$(BIN)/python train.py test --config configs/demo/shapes_caption_vit.yaml --ckpt_path $(CKPT)
	$(BIN)/vitcap data shapes --out $(DEMO)/shapes --num 8 --seed 7
	$(BIN)/vitcap caption --checkpoint $(CKPT) $(DEMO)/shapes/captions/images

test: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n 2 -q

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

clean:
	rm -rf runs predictions.json .pytest_cache
