# Two entry points for a fresh machine (see README):
#   make demo   set up .venv if needed, then run the main job
#   make test   set up .venv if needed, then run lint and the test suite
# Set-up is skipped when .venv is newer than pyproject.toml and constraints.txt.

PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.vans-installed
PYTEST_ARGS ?=

export HF_HUB_OFFLINE := 1

.PHONY: setup browser demo test test-all lint bench bench-paper clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

# The web demo's browser test drives Debian's Chromium (no browser download): installed
# here when missing and make runs as root (as CI does); otherwise that test is skipped.
browser:
	@command -v chromium >/dev/null || [ "$$(id -u)" != 0 ] || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		  apt-get install -y -qq chromium >/dev/null; }

demo: $(STAMP)
	$(BIN)/vans demo --out outputs/demo

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

test: lint browser
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

test-all: lint browser
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(STAMP) bench-paper
	$(BIN)/python benchmarks/bench_toyworld.py
	$(BIN)/python benchmarks/predict_latency.py
	$(BIN)/python benchmarks/bench_reward_videos.py
	$(BIN)/python benchmarks/bench_joint_grpo.py
	$(BIN)/python benchmarks/bench_group_sampling.py
	$(BIN)/python benchmarks/bench_stage2_memory.py
	$(BIN)/python benchmarks/bench_training.py
	$(BIN)/python benchmarks/read_video_memory.py
	$(BIN)/python benchmarks/cli_startup.py
	$(BIN)/python benchmarks/bench_judge.py

# The paper's models at their published shapes: sizes and planned memory (meta device) on
# any machine; with a GPU also caption and video latency and Joint-GRPO step memory.
bench-paper: $(STAMP)
	$(BIN)/python benchmarks/predict_latency.py --scale paper
	$(BIN)/python benchmarks/bench_joint_grpo.py --scale paper

clean:
	rm -rf $(VENV) outputs .pytest_cache .ruff_cache
