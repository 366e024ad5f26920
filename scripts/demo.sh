#!/usr/bin/env bash
# The main job (`make demo`): a recorded bimanual episode goes through the real policy node over DDS, and
# a report compares the node's commands with the recorded ones. No robot, no GPU, no downloads.
#
#   1. a checkpoint: the shipped policy under models/ when there is one, else a random tiny one (made once);
#   2. an episode bag (MCAP) recorded by the scripted expert in the ALOHA simulation (transfer-cube):
#      three cameras, joint states, instruction, the commanded actions;
#   3. offline evaluation in simulated time (deterministic report);
#   4. replay evaluation: `vla-bag play --clock` -> vla_policy_node (use_sim_time) -> recorder -> report;
#   5. a closed loop: the simulation and the node as separate processes (deterministic lock-step), with a
#      gif per episode (a 240x320 view for people, apart from the policy's 96x128 cameras) and the success
#      count. With the shipped policy: full episodes on the first three evaluation seeds of its model card
#      (1000-1002, fixed before training, not picked by outcome); with a random checkpoint: one 2 s episode.
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

params="$root/ros2_ws/src/vla_sim/config/aloha.yaml"  # ALOHA joints and cameras -> the model's groups
rm -rf "$out/episodes"
vla-sim demos --task transfer_cube --episodes 1 --seed 0 --out "$out/episodes" --height 96 --width 128
episode="$out/episodes/episode_000000"

echo "demo: offline evaluation (simulated time, deterministic)"
vla-policy eval --bag "$episode" --checkpoint "$checkpoint" --params "$params" --out "$out/offline" --no-progress

echo "demo: replay evaluation through the running node (separate processes over DDS)"
vla-bag replay-eval --bag "$episode" --checkpoint "$checkpoint" --params "$params" --out "$out/replay"

echo "demo: closed loop in the simulation (sim and node as separate processes)"
if [[ -n "$shipped" ]]; then
    loop=(--episodes 3 --seed 1000 --noise-seed 1000 --videos 3)  # fixed seeds: nothing picked after the fact
else
    loop=(--episodes 1 --episode-seconds 2)
fi
vla-sim eval --checkpoint "$checkpoint" --task transfer_cube "${loop[@]}" \
    --height 96 --width 128 --out "$out/closed_loop"
python - "$out/closed_loop/eval.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
seeds = ", ".join(str(e["seed"]) for e in r["episodes"])
print(f"demo: closed loop: {r['successes']} of {r['n_episodes']} episodes succeeded (seeds {seeds})")
PY
echo
echo "demo: done in $(( $(date +%s) - start )) s"
echo "demo: offline report  $out/offline/report.md"
echo "demo: replay report   $out/replay/report.md"
echo "demo: closed loop     $out/closed_loop/eval.md (video: $out/closed_loop/video/)"
