# The two commands in the README: `make train` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# MediaPipe's ImageSegmenter, for the test that runs our TFLite exports in it (its OpenCV clashes with ours).
MP_VENV := .venv-mp
MP_STAMP := $(MP_VENV)/.installed

# Settings of the default run (the bundled CamVid sample); override e.g. `make train EPOCHS=30`.
EPOCHS ?= 25
TRAIN_FLAGS ?=

.PHONY: setup train test notebooks bench clean

setup: $(STAMP)

# Reinstalls only when the requirements change; safe to run again.
$(STAMP): requirements.txt requirements-nodeps.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -r requirements-nodeps.txt
	touch $(STAMP)

$(MP_STAMP): requirements-mediapipe.txt
	test -x $(MP_VENV)/bin/python || $(PYTHON) -m venv $(MP_VENV)
	$(MP_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-mediapipe.txt
	touch $(MP_STAMP)

train: setup
	$(PY) train.py --dataset sample --epochs $(EPOCHS) $(TRAIN_FLAGS)

# Two workers, one test file each at a time (module fixtures such as a trained run stay in one process).
test: setup $(MP_STAMP)
	SEGKIT_MEDIAPIPE_PYTHON=$(MP_VENV)/bin/python $(PY) -m pytest -n 2 --dist loadfile

notebooks: setup
	$(PY) -m notebooks.run_all

clean:
	rm -rf runs .pytest_cache
