# Two commands do all the set-up on a fresh machine:
#   make demo   creates .venv, installs ctrlsparse, trains the digits problem three ways
#               (constrained model-wise, constrained per-layer, penalized) and compares them
#   make test   creates .venv-dev with the dev extras and runs the test suite
#   make docs   creates .venv-docs and builds the documentation site into site/ (strict; needs Node/npm)
#   make check-pythons  installs into a venv per supported Python and runs a short smoke check
PYTHON ?= python3
VENV := .venv
DEV_VENV := .venv-dev
DOCS_VENV := .venv-docs
KATEX := docs/assets/katex
IFRAME_WORKER := docs/assets/iframe-worker
RUNS ?= runs/demo
DEMO_PROBLEM := problems/digits_mlp.toml

.PHONY: demo test lint docs docs-serve check-pythons clean

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -c constraints.txt -e ".[digits]"
	touch $@

$(DEV_VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(DEV_VENV)
	$(DEV_VENV)/bin/pip install -q -c constraints.txt -e ".[dev]"
	touch $@

$(DOCS_VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(DOCS_VENV)
	$(DOCS_VENV)/bin/pip install -q -c constraints.txt -e ".[docs]"
	touch $@

# KaTeX from the npm registry (pinned by docs/package-lock.json), served from the site itself, and
# the iframe-worker shim with which the offline plugin's search runs in a site opened from disk.
$(KATEX)/katex.min.js: docs/package.json docs/package-lock.json
	rm -rf build/npm && mkdir -p build/npm && cp docs/package.json docs/package-lock.json build/npm/
	cd build/npm && npm ci --no-audit --no-fund --loglevel=error
	rm -rf $(KATEX) && mkdir -p $(KATEX)/contrib
	cp -r build/npm/node_modules/katex/dist/katex.min.css build/npm/node_modules/katex/dist/fonts $(KATEX)/
	cp build/npm/node_modules/katex/dist/contrib/auto-render.min.js $(KATEX)/contrib/
	mkdir -p $(IFRAME_WORKER) && cp build/npm/node_modules/iframe-worker/shim/index.js $(IFRAME_WORKER)/shim.js
	cp build/npm/node_modules/katex/dist/katex.min.js $(KATEX)/

docs: $(DOCS_VENV)/.installed $(KATEX)/katex.min.js
	$(DOCS_VENV)/bin/mkdocs build --strict

docs-serve: $(DOCS_VENV)/.installed $(KATEX)/katex.min.js
	$(DOCS_VENV)/bin/mkdocs serve

demo: $(VENV)/.installed
	$(VENV)/bin/ctrlsparse run $(DEMO_PROBLEM) --target-density 0.3 --overwrite --out $(RUNS)/constrained-model
	$(VENV)/bin/ctrlsparse run $(DEMO_PROBLEM) --target-density fc1=0.3,fc2=0.5,fc3=0.8 --overwrite --out $(RUNS)/constrained-layer
	$(VENV)/bin/ctrlsparse run $(DEMO_PROBLEM) --penalty 0.5 --overwrite --out $(RUNS)/penalized
	for run in constrained-model constrained-layer penalized; do $(VENV)/bin/ctrlsparse plot $(RUNS)/$$run || exit 1; done
	$(VENV)/bin/ctrlsparse compare $(RUNS)/constrained-model $(RUNS)/constrained-layer $(RUNS)/penalized --out $(RUNS)

# pytest exits 5 when it collected no test: treat that as a failure with a clear message.
test: $(DEV_VENV)/.installed
	@$(DEV_VENV)/bin/python -m pytest; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests"; exit 1; fi; exit $$rc

# One venv per Python in pyproject.toml's classifiers, under build/pythons (reused).
check-pythons:
	bash .ci/check-pythons

lint: $(DEV_VENV)/.installed
	$(DEV_VENV)/bin/ruff check src tests examples
	$(DEV_VENV)/bin/ruff format --check src tests examples

clean:
	rm -rf $(VENV) $(DEV_VENV) $(DOCS_VENV) runs site build $(KATEX) $(IFRAME_WORKER)
