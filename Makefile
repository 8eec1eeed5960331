# Two commands on a fresh machine: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
RUN    ?= runs/demo
export PYTHONHASHSEED := 0

.PHONY: install demo test test-all lint format bench lock clean

$(STAMP): requirements/cpu.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# --no-deps: the lock is complete; it keeps torchrec's CUDA fbgemm-gpu requirement out.
	$(BIN)/pip install -qq --no-deps -r requirements/cpu.lock
	$(BIN)/pip install -qq --no-deps --no-build-isolation -e .
	@touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/tagllm demo --out $(RUN)

test: install
	@bash scripts/ensure-redis.sh
	$(BIN)/pytest -q -m "not slow"

test-all: install
	@bash scripts/ensure-redis.sh
	$(BIN)/pytest -q

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: install
	@test -f $(RUN)/summary.json || $(BIN)/tagllm demo --out $(RUN)
	$(BIN)/tagllm bench all --run $(RUN) --out docs/bench-results

lock: install
	{ sed -n '1,3p' requirements/cpu.lock; $(BIN)/pip freeze --all --exclude-editable | grep -v '^pip=='; } > requirements/cpu.lock.tmp
	mv requirements/cpu.lock.tmp requirements/cpu.lock

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
