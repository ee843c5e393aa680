# Two commands set up and run everything from a fresh clone:
#   make demo   - the main job: `promptloop demo` on the embedded world v3 (Backdrops)
#   make test   - the test suite (offline; installs chromium for the app's browser test when missing)
#   $(VENV)/bin/promptloop app - the web app at http://127.0.0.1:7860
# Both create .venv when missing and install exact versions from requirements/lock.txt (hashes checked;
# resolved for Python 3.11 on CPU; pyproject.toml keeps ranges for library users). torch is not in the lock:
# it comes from TORCH_SPEC, the CPU build 2.13.0 by default; GPU users: `make demo TORCH_SPEC="torch"`
# (or install torch for your CUDA first).
#   make lock         - re-resolve requirements/lock.txt to the newest releases pyproject.toml allows
#   make test-latest  - the suite against the newest releases in .venv-latest, with what differs from the
#                       lock and what fails (not part of CI)
PYTHON ?= python3.11
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
comma := ,
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

LOCK := requirements/lock.txt
EXTRAS := dev,app,quant
LATEST ?= .venv-latest
TOOLS ?= .venv-tools

.PHONY: demo test lint venv clean browser lock test-latest

# the lock first (every package pinned with its hashes, no resolution), then torch, then the project itself
$(VENV)/.installed: pyproject.toml $(LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --require-hashes --no-deps -r $(LOCK)
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	$(PY) -m pip check
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

# re-resolve the lock (pip-tools in its own venv): the newest releases that pyproject.toml and requirements/lock.in allow
lock:
	test -x $(TOOLS)/bin/pip-compile || { $(PYTHON) -m venv $(TOOLS) && $(TOOLS)/bin/pip install -q "pip-tools==7.7.0"; }
	$(TOOLS)/bin/pip-compile --quiet --upgrade --generate-hashes --strip-extras \
	  $(foreach e,$(subst $(comma), ,$(EXTRAS)),--extra $(e)) --unsafe-package torch \
	  --no-emit-find-links --no-emit-index-url -o $(LOCK) pyproject.toml requirements/lock.in

# the suite against the newest releases (not the lock) in its own venv, torch held at TORCH_SPEC's build; prints what
# differs from the lock, then runs the tests and lists what fails. Its exit status is pytest's.
test-latest: browser
	test -x $(LATEST)/bin/python || $(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/python -m pip install -q --upgrade pip
	$(LATEST)/bin/python -m pip install -q "$(TORCH_SPEC)"
	$(LATEST)/bin/python -W ignore -c "import torch; print('torch==' + torch.__version__)" > $(LATEST)/torch-constraint.txt
	$(LATEST)/bin/python -m pip install -q --upgrade --upgrade-strategy eager -c $(LATEST)/torch-constraint.txt -e ".[$(EXTRAS)]"
	$(LATEST)/bin/python requirements/diff_lock.py $(LOCK)
	$(LATEST)/bin/python -m pytest -p no:cacheprovider -rfE

clean:
	rm -rf $(VENV) $(LATEST) $(TOOLS) outputs .pytest_cache
