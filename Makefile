# The two commands of the README:
#   make demo       the whole grid on tiny models, locally (launcher -> results/ -> aggregate -> report)
#   make test-all   the whole test suite (what CI runs); `make test` is its fast tier, for the edit loop
# Each bootstraps .venv from the pinned constraints on a fresh machine.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
export HW5_DATA_DIR ?= $(abspath ../shared/data)

.PHONY: demo test test-all venv clean
venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints/ci.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -c constraints/ci.txt -e '.[dev]'
	touch $@

demo: venv
	$(BIN)/python jobs/launch.py --all --smoke --cluster local
	$(BIN)/python -m hw5 stats nli --smoke
	$(BIN)/python -m hw5 stats ser --smoke
	$(BIN)/python aggregate.py --smoke

# the fast tier while editing: logic and tiny models, no slow / SLURM / Docker tests, none over 10 s
test: venv
	HW5_FAST_TIER_LIMIT_S=10 $(BIN)/python -m pytest -q -m "not slow and not slurm and not docker"

# everything (what .ci/run calls): the slow smoke runs, and the SLURM and Docker tests where those run
# (one process: some tests build on the one above them, and parallel workers oversubscribe 2 cores)
test-all: venv
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) results/*/ cache checkpoints
