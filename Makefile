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

# -rs: say why each skipped test was skipped (no GPU, no flash-attn, ...)
test: $(STAMP)
	$(PY) -m pytest tests -q -rs

# the same without the end-to-end tests marked slow (about a third of the time)
test-fast: $(STAMP)
	$(PY) -m pytest tests -q -rs -m "not slow"

# remove what `make demo` wrote (the synthetic dataset and the demo's work dir)
clean-demo:
	rm -rf data/synthetic_ade work_dirs/demo
