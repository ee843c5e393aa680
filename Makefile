# Two commands set up and run everything from a fresh clone:
#   make demo   - the main job: `promptloop demo` on the embedded Shapes world
#   make test   - the test suite (offline; installs chromium for the app's browser test when missing)
#   $(VENV)/bin/promptloop app - the web app at http://127.0.0.1:7860
# Both create .venv when missing and install what they need. On CPU machines torch is pinned to
# the CPU build 2.13.0; GPU users: `make demo TORCH_SPEC="torch"` (or install torch for your CUDA first).
PYTHON ?= python3.11
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: demo test lint venv clean browser

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev,app,quant]"
	touch $@

venv: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/promptloop demo

# the app's browser test drives Debian's chromium + chromium-driver; installed with apt when missing
# (as root, or through passwordless sudo); where that fails the browser test is skipped with the reason.
browser:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO="sudo -n"; \
	  if command -v apt-get >/dev/null && { [ -z "$$SUDO" ] || sudo -n true 2>/dev/null; }; then \
	    echo "installing chromium + chromium-driver (apt) for the app's browser test"; \
	    DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 || \
	    { $$SUDO apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q \
	      chromium chromium-driver >/dev/null 2>&1; } || echo "could not install chromium: the browser test will be skipped"; \
	  else echo "chromium / chromedriver missing (apt-get install chromium chromium-driver): the browser test will be skipped"; fi; \
	fi

test: $(VENV)/.installed browser
	$(PY) -m pytest

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) outputs .pytest_cache
