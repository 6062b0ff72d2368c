# make setup | make demo | make test        (VENV=/path/to/env to use an existing environment)
VENV ?= $(CURDIR)/.venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.internvit-setup-done
export VENV

.PHONY: setup demo test test-fast clean-demo

$(STAMP): requirements/torch.txt requirements/mmcv.txt requirements/runtime.txt requirements/tests.txt requirements/build.txt requirements/distributed.txt setup.py tools/install.sh
	bash tools/install.sh

setup:
	bash tools/install.sh

demo: $(STAMP)
	$(PY) tools/demo.py

test: $(STAMP)
	$(PY) -m pytest tests -q

test-fast: $(STAMP)
	$(PY) -m pytest tests -q -m "not slow"
