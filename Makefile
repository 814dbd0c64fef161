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

# The browser test of `segkit export --format web` (tests/test_web.py): Debian's Chromium, and playwright-core
# (with the pinned MediaPipe web runtime) from package-lock.json. Only the tests need these; the export itself
# needs neither Node nor npm.
WEB_APP := segkit/exporters/web_app
WEB_STAMP := $(WEB_APP)/node_modules/.installed

.PHONY: setup train test notebooks bench clean web-setup

setup: $(STAMP)

# Reinstalls only when the requirements change; safe to run again. The project itself goes in last, editable
# (`pip install -e .`: the `segkit` command, and `import segkit` from anywhere); its dependencies are already
# there, pinned by requirements.txt.
$(STAMP): requirements.txt requirements-nodeps.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -r requirements-nodeps.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

$(MP_STAMP): requirements-mediapipe.txt
	test -x $(MP_VENV)/bin/python || $(PYTHON) -m venv $(MP_VENV)
	$(MP_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-mediapipe.txt
	touch $(MP_STAMP)

train: setup
	$(VENV)/bin/segkit train --dataset sample --epochs $(EPOCHS) $(TRAIN_FLAGS)

web-setup: $(WEB_STAMP)

$(WEB_STAMP): $(WEB_APP)/package-lock.json
	test -x /usr/bin/chromium || (command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || \
		echo "web-setup: no /usr/bin/chromium (apt-get install chromium as root); tests/test_web.py will skip"
	command -v npm >/dev/null && cd $(WEB_APP) && npm ci --no-audit --no-fund --silent && touch node_modules/.installed || \
		echo "web-setup: npm is missing; tests/test_web.py will skip"

# Two workers, one test file each at a time (module fixtures such as a trained run stay in one process).
test: setup $(MP_STAMP) $(WEB_STAMP)
	SEGKIT_MEDIAPIPE_PYTHON=$(MP_VENV)/bin/python $(PY) -m pytest -n 2 --dist loadfile

notebooks: setup
	$(PY) -m notebooks.run_all

clean:
	rm -rf runs .pytest_cache build *.egg-info
