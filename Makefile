# The two entry points of the project. Each creates the virtual environment when it is missing
# (or when pyproject.toml changed), so either works alone on a new machine.
# A Python 3.12 for the venv: $(PYTHON) when given, else python3.12 on PATH, else pyenv's newest 3.12
# (pyenv's python3.12 shim fails while another version is global, so each candidate is run once).
ifndef PYTHON
PYTHON := $(shell for p in python3.12 $$(ls -d $$HOME/.pyenv/versions/3.12.*/bin/python3.12 2>/dev/null | sort -rV); do \
	$$p -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' 2>/dev/null && { command -v $$p; break; }; done)
endif
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

export MUJOCO_GL ?= egl
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: demo test

demo: $(STAMP)
	$(PY) scripts/demo.py

# Two workers (one per core); a test file stays on one worker, so its module fixtures run once.
test: $(STAMP)
	$(PY) -m pytest -n 2 --dist loadfile

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "make: no Python 3.12 found. Install one (pyenv install 3.12, or your" \
		"distribution's python3.12 and python3.12-venv), or name it: make PYTHON=/path/to/python3.12"; exit 1; }
	@$(PY) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' 2>/dev/null || \
		{ rm -rf $(VENV) && echo "creating $(VENV) with $(PYTHON)" && $(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)
