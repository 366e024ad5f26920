#!/usr/bin/env bash
# The main job (`make demo`): a recorded bimanual episode goes through the real policy node over DDS, and
# a report compares the node's commands with the recorded ones. No robot, no GPU, no downloads.
#
#   1. a checkpoint: the shipped policy under models/ when there is one, else a random tiny one (made once);
#   2. a synthetic episode bag (MCAP): three rendered cameras, joint states, instruction, recorded commands;
#   3. offline evaluation in simulated time (deterministic report);
#   4. replay evaluation: `vla-bag play --clock` -> vla_policy_node (use_sim_time) -> recorder -> report.
#
# Expects the environment of scripts/env.sh (the Makefile sources it). DEMO_OUT overrides the output folder.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${DEMO_OUT:-$root/out/demo}"
mkdir -p "$out"
start=$(date +%s)

checkpoint="$out/checkpoint"
shipped="$(ls -d "$root"/models/*/ 2>/dev/null | head -n 1 || true)"
if [[ -n "$shipped" && -f "$shipped/config.json" ]]; then
    checkpoint="${shipped%/}"
    echo "demo: checkpoint $checkpoint (shipped)"
elif [[ -f "$checkpoint/config.json" ]]; then
    echo "demo: checkpoint $checkpoint (random tiny, made earlier)"
else
    vla-policy init --preset tiny --out "$checkpoint" --seed 0
fi

rm -rf "$out/episode"
vla-bag sample --out "$out/episode" --duration 8 --seed 0

echo "demo: offline evaluation (simulated time, deterministic)"
vla-policy eval --bag "$out/episode" --checkpoint "$checkpoint" --out "$out/offline" --no-progress

echo "demo: replay evaluation through the running node (separate processes over DDS)"
vla-bag replay-eval --bag "$out/episode" --checkpoint "$checkpoint" --out "$out/replay"

echo
echo "demo: done in $(( $(date +%s) - start )) s"
echo "demo: offline report  $out/offline/report.md"
echo "demo: replay report   $out/replay/report.md"
