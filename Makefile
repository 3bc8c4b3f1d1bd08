# The README's commands. `make chat` installs and starts the product; `make test` installs and runs the tests.
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip

.PHONY: install browser chat test lint bench bench-api notebook

install:
	$(PIP) install -q -r requirements.txt

# Debian's Chromium for the browser tests; Playwright drives it, never downloads its own.
browser:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)

chat: install
	$(PYTHON) -m demo

test: install browser
	$(PYTHON) -m pytest -q

lint:
	$(PYTHON) -m ruff check rag demo tests bench
	$(PYTHON) -m ruff format --check rag demo tests bench
	$(PYTHON) -m mypy rag

# Latency of one question through the JSON API and through gradio_client (loopback, bounded).
bench-api: install
	$(PYTHON) bench/api_latency.py

# Re-run the example notebook in place, so the outputs saved in the repository match the code.
notebook: install
	HF_HUB_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False $(PYTHON) -m jupyter execute --inplace --kernel_name=python3 demo/notebook.ipynb
