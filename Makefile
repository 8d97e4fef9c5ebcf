# The two commands of the README:
#   make demo   the whole grid on tiny models, locally (launcher -> results/ -> aggregate -> report)
#   make test   the test suite
# Each bootstraps .venv from the pinned constraints on a fresh machine.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
export HW5_DATA_DIR ?= $(abspath ../shared/data)

.PHONY: demo test venv clean
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

test: venv
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) results/*/ cache checkpoints
