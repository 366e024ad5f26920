# One entry point per task. Every target that runs Python sources scripts/env.sh (venv + ROS overlay).
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
ENV := source scripts/env.sh >/dev/null &&
PYTEST_ARGS ?=

.PHONY: help setup lint test demo soak clean

help:
	@echo "make setup   - create .venv, install the pinned lock, build ros2_ws with colcon (idempotent)"
	@echo "make test    - setup when needed, then lint, then the whole pytest suite"
	@echo "make lint    - ruff check ."
	@echo "make demo    - the main job: a synthetic episode through the real node over DDS, with reports"
	@echo "make soak    - 30 min node soak on synthetic input (VLA_SOAK_SECONDS), reliability report"

setup:
	@bash scripts/setup.sh

lint:
	@[ -x .venv/bin/ruff ] || bash scripts/setup.sh
	@$(ENV) ruff check --no-cache .

test: setup
	@$(ENV) echo "lint: ruff check ." && ruff check --no-cache . && python -m pytest $(PYTEST_ARGS)

demo: setup
	@$(ENV) scripts/demo.sh

soak: setup
	@$(ENV) scripts/soak.sh

clean:
	rm -rf ros2_ws/build ros2_ws/install ros2_ws/log .pytest_cache .ruff_cache
