# The two commands in the README: `make train` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# Settings of the default run (the bundled CamVid sample); override e.g. `make train EPOCHS=30`.
EPOCHS ?= 25
TRAIN_FLAGS ?=

.PHONY: setup train test notebooks bench clean

setup: $(STAMP)

# Reinstalls only when requirements.txt changes; safe to run again.
$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $(STAMP)

train: setup
	$(PY) train.py --dataset sample --epochs $(EPOCHS) $(TRAIN_FLAGS)

test: setup
	$(PY) -m pytest

notebooks: setup
	$(PY) -m notebooks.run_all

clean:
	rm -rf runs .pytest_cache
