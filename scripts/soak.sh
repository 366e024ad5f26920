#!/usr/bin/env bash
# Long-running node soak (issue 13): the real node with synthetic input, checked by the invariant monitor.
# Duration: VLA_SOAK_SECONDS (default 1800) or --duration SECONDS; report dir: VLA_RELIABILITY_DIR
# (default out/reliability/soak). Run through `make soak` (which sources scripts/env.sh), or after
# `source scripts/env.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."
export VLA_RELIABILITY_DIR="${VLA_RELIABILITY_DIR:-out/reliability/soak}"
exec python ros2_ws/src/vla_policy_node/test/soak.py "$@"
