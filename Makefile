# Two commands do all the set-up on a fresh machine:
#   make demo   - create .venv, install tltf, train a cats-vs-dogs classifier and export a .tflite
#   make test   - create .venv, install tltf with its test tools, run the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SHARED ?= ../shared
DATA ?= $(SHARED)/datasets/cats_and_dogs_filtered
OUT ?= runs/demo
PYTEST_ARGS ?=
# Test processes: most tests spend their time in one Python thread (small models, subprocess
# start-up), so two processes share two cores well; a test file stays in one
# process (its module fixtures are built once).
TEST_JOBS ?= 2

.PHONY: install demo test docs clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev,docs,mediapipe,kerashub]"
	touch $@

install: $(VENV)/.installed

# `make demo` trains afresh each time (--overwrite replaces the previous demo run in $(OUT)).
# Offline machines: Keras finds the ImageNet weights in $KERAS_HOME/models/, seeded from
# $(SHARED)/keras_weights when that folder exists. With network access nothing is needed.
demo: install
	@if [ -d "$(SHARED)/keras_weights" ]; then export KERAS_HOME=$$($(PY) tools/seed_keras_home.py); fi; \
	if [ -d "$(DATA)" ]; then \
	  $(PY) examples/cats_vs_dogs.py --data-dir "$(DATA)" --out "$(OUT)" --overwrite; \
	else \
	  $(PY) examples/cats_vs_dogs.py --out "$(OUT)" --overwrite; \
	fi

test: install
	$(VENV)/bin/ruff check tltf tests examples benchmarks tools
	$(PY) -m pytest -n $(TEST_JOBS) --dist loadfile $(PYTEST_ARGS)

docs: install
	$(VENV)/bin/mkdocs build --strict

clean:
	rm -rf $(VENV) site runs .pytest_cache
