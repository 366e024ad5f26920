#!/usr/bin/env bash
# One-command setup of the workspace: venv, pinned Python dependencies, ROS 2 Kilted wheels,
# editable project packages, CMake path fix-up, colcon build of ros2_ws.
# Idempotent: every step is stamped, and a second run does nothing and says so.
#
#   bash scripts/setup.sh            # or: make setup
#   VLA_SETUP_FORCE=1 bash scripts/setup.sh   # redo every step
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VLA_VENV:-$ROOT/.venv}"
LOCK="$ROOT/requirements/lock.txt"
TORCH_PIN="torch==2.13.0"      # keep equal to the torch pin in requirements/lock.txt
WS="$ROOT/ros2_ws"
STAMPS="$VENV/.vla-setup"
PY_WANT="${PYTHON:-python3.11}"
FORCE="${VLA_SETUP_FORCE:-0}"

t0=$(date +%s)
did=()
say() { echo "setup: $*"; }
die() { echo "setup: error: $*" >&2; exit 1; }

# --- 1. System prerequisites ---------------------------------------------------------------
# command -> Debian package
declare -A DEB=([cmake]=cmake [gcc]=gcc [g++]=g++ [make]=make [git]=git)
missing=()
for cmd in cmake gcc g++ make git; do
    command -v "$cmd" >/dev/null 2>&1 || missing+=("${DEB[$cmd]}")
done
if ! command -v "$PY_WANT" >/dev/null 2>&1; then
    missing+=(python3.11 python3.11-venv python3.11-dev)
elif ! "$PY_WANT" -c 'import sys, sysconfig, os, venv, ensurepip
assert sys.version_info[:2] == (3, 11), sys.version
assert os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h"))' >/dev/null 2>&1; then
    if ! "$PY_WANT" -c 'import sys; assert sys.version_info[:2] == (3, 11)' >/dev/null 2>&1; then
        die "$PY_WANT is not Python 3.11; install python3.11 (apt-get install -y python3.11 python3.11-venv python3.11-dev) or set PYTHON=/path/to/python3.11"
    fi
    missing+=(python3.11-venv python3.11-dev)
fi
if ((${#missing[@]})); then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        say "installing missing system packages: ${missing[*]}"
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"; } >/dev/null \
            || die "apt-get could not install: ${missing[*]}"
        did+=("system packages")
    else
        die "missing system packages: ${missing[*]}; install them with: sudo apt-get install -y ${missing[*]}"
    fi
fi

# --- 2. Virtual environment -------------------------------------------------------------
if [[ ! -x "$VENV/bin/python" ]]; then
    say "creating $VENV"
    "$PY_WANT" -m venv "$VENV" || die "could not create the venv; install python3.11-venv"
    did+=("venv")
fi
"$VENV/bin/python" -c 'import sys; assert sys.version_info[:2] == (3, 11)' 2>/dev/null \
    || die "$VENV is not a Python 3.11 venv; remove it and run again"
mkdir -p "$STAMPS"
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check)

# pip, quietly: its output goes to a log, shown (without the local mirror's noise) only on failure.
pip_install() {
    if ! "${PIP[@]}" install "$@" > "$STAMPS/pip.log" 2>&1; then
        grep -v "^WARNING: Location 'file:" "$STAMPS/pip.log" | tail -n 30 >&2
        return 1
    fi
}
hash_of() { cat "$@" 2>/dev/null | sha256sum | cut -c1-64; }
stamp_ok() { [[ "$FORCE" != 1 && -f "$STAMPS/$1" && "$(cat "$STAMPS/$1")" == "$2" ]]; }

# --- 3. torch first, then the lock --------------------------------------------------------
[[ -f "$LOCK" ]] || die "missing $LOCK"
lock_hash="$(hash_of "$LOCK")-$TORCH_PIN"
if stamp_ok lock "$lock_hash"; then
    :
else
    say "installing $TORCH_PIN (first, on its own)"
    pip_install "$TORCH_PIN" || die "pip could not install $TORCH_PIN"
    say "installing the pinned lock ($(grep -c '^[^#]' "$LOCK") pins)"
    pip_install -r "$LOCK" || die "pip could not install requirements/lock.txt"
    echo "$lock_hash" > "$STAMPS/lock"
    rm -f "$STAMPS/editable" "$STAMPS/cmake-paths"
    did+=("python packages")
fi

# --- 3b. Simulation extra (vla_sim: gym-aloha, MuJoCo, dm_control), pinned; never pulls torch ---------
SIM_REQ="$ROOT/requirements/sim.txt"
if [[ -f "$SIM_REQ" ]]; then
    sim_hash="$(hash_of "$SIM_REQ")-$lock_hash"
    if ! stamp_ok sim "$sim_hash"; then
        say "installing the simulation extra ($(grep -c '^[^#]' "$SIM_REQ") pins)"
        pip_install -r "$SIM_REQ" "$TORCH_PIN" || die "pip could not install requirements/sim.txt"
        echo "$sim_hash" > "$STAMPS/sim"
        did+=("sim extra")
    fi
fi

# --- 4. Editable project packages (deps come from the lock) -----------------------------
editable=()
for d in "$WS/src/vla_policy" "$WS/src/vla_policy_node" "$WS/src/vla_sim" "$ROOT/export"; do
    if [[ -f "$d/pyproject.toml" || -f "$d/setup.py" ]]; then editable+=("$d"); fi
done
ed_files=()
for d in "${editable[@]}"; do
    for f in pyproject.toml setup.py setup.cfg; do [[ -f "$d/$f" ]] && ed_files+=("$d/$f"); done
done
ed_hash="$(printf '%s\n' "${editable[@]}" | sha256sum | cut -c1-16)-$(hash_of "${ed_files[@]}")"
if ! stamp_ok editable "$ed_hash"; then
    args=()
    for d in "${editable[@]}"; do args+=(-e "$d"); done
    say "installing editable: ${editable[*]#"$ROOT"/}"
    pip_install --no-deps --no-build-isolation "${args[@]}" \
        || die "pip could not install the project packages in editable mode"
    echo "$ed_hash" > "$STAMPS/editable"
    did+=("editable packages")
fi

# --- 5. Rewrite the build-machine paths in the ROS wheels' CMake files ----------------------
if ! stamp_ok cmake-paths "$lock_hash"; then
    n=$("$PY" - "$VENV" <<'PYEOF'
import pathlib, sys, sysconfig
import numpy
venv = pathlib.Path(sys.argv[1])
subs = {
    "/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include": numpy.get_include(),
    "/opt/python/cp311-cp311/include/python3.11": sysconfig.get_paths()["include"],
}
changed = 0
for path in (venv / "share").rglob("*.cmake"):
    text = path.read_text(errors="surrogateescape")
    new = text
    for old, repl in subs.items():
        new = new.replace(old, repl)
    if new != text:
        path.write_text(new, errors="surrogateescape")
        changed += 1
print(changed)
PYEOF
) || die "could not rewrite the CMake paths under $VENV/share"
    say "rewrote build-machine paths in $n CMake files"
    echo "$lock_hash" > "$STAMPS/cmake-paths"
    did+=("cmake paths")
fi

# --- 6. colcon build of the workspace -----------------------------------------------------
mapfile -t pkg_dirs < <(find "$WS/src" -name package.xml -not -path '*/build/*' -printf '%h\n' | sort)
skip=()
for d in "${pkg_dirs[@]}"; do
    if grep -q '<build_type>ament_python</build_type>' "$d/package.xml" && [[ ! -f "$d/setup.py" ]]; then
        skip+=("$(basename "$d")")
    fi
done
mapfile -t build_files < <(cd "$WS/src" && find . \( -name build -o -name __pycache__ -o -name '*.egg-info' \) -prune -o -type f \
    \( -name package.xml -o -name CMakeLists.txt -o -name setup.py -o -name setup.cfg -o -name pyproject.toml \
       -o -name '*.msg' -o -name '*.srv' -o -name '*.action' -o -path '*/resource/*' -o -path '*/launch/*' \
       -o -path '*/config/*' \) -print | sort)
ws_hash="$( (cd "$WS/src" && printf '%s\n' "${build_files[@]}" && cat "${build_files[@]}"; echo "$lock_hash ${skip[*]}") | sha256sum | cut -c1-64)"
ws_stamp="$WS/install/.vla-build-stamp"
if [[ "$FORCE" != 1 && -f "$ws_stamp" && "$(cat "$ws_stamp")" == "$ws_hash" && -f "$WS/install/local_setup.bash" ]]; then
    :
else
    ((${#skip[@]})) && say "skipping ament_python packages without setup.py: ${skip[*]}"
    say "colcon build (${#pkg_dirs[@]} packages)"
    skip_args=()
    ((${#skip[@]})) && skip_args=(--packages-skip "${skip[@]}")
    mkdir -p "$WS/log"
    (
        cd "$WS"
        export VIRTUAL_ENV="$VENV" PATH="$VENV/bin:$PATH"
        export AMENT_PREFIX_PATH="$VENV" CMAKE_PREFIX_PATH="$VENV"
        unset COLCON_PREFIX_PATH PYTHONPATH
        "$VENV/bin/colcon" build --symlink-install "${skip_args[@]}" \
            --event-handlers console_cohesion- console_stderr- status- summary+ \
            --cmake-args -DBUILD_TESTING=OFF -DPython3_EXECUTABLE="$PY" -DPYTHON_EXECUTABLE="$PY" \
            > "$WS/log/setup-colcon.txt" 2>&1 || { tail -n 40 "$WS/log/setup-colcon.txt" >&2; exit 1; }
    ) 2>&1 || die "colcon build failed; full output in ros2_ws/log/setup-colcon.txt"
    echo "$ws_hash" > "$ws_stamp"
    did+=("colcon build")
fi

dt=$(( $(date +%s) - t0 ))
if ((${#did[@]})); then
    say "done in ${dt}s (${did[*]}); now: source scripts/env.sh"
else
    say "nothing to do, everything is up to date (${dt}s)"
fi
