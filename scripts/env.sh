# shellcheck shell=bash
# Source this file (bash or zsh) to get the workspace environment in an interactive shell:
#   source scripts/env.sh
# It activates .venv, overlays ros2_ws/install (so `import vla_msgs.msg` works), sets the library path of
# the ROS wheels and the overlay, and the ROS defaults of this project (domain, localhost discovery, logs).
# Run `make setup` (scripts/setup.sh) first.

if [ -n "${BASH_SOURCE:-}" ]; then
    _vla_here="${BASH_SOURCE[0]}"
else
    _vla_here="${(%):-%x}"   # zsh
fi
VLA_ROOT="$(cd "$(dirname "$_vla_here")/.." && pwd)"
export VLA_ROOT
_vla_venv="${VLA_VENV:-$VLA_ROOT/.venv}"

if [ ! -x "$_vla_venv/bin/python" ]; then
    echo "env.sh: no venv at $_vla_venv; run: make setup" >&2
    return 1 2>/dev/null || exit 1
fi

# Python venv (the equivalent of `source .venv/bin/activate`, without its prompt change).
export VIRTUAL_ENV="$_vla_venv"
case ":$PATH:" in *":$_vla_venv/bin:"*) ;; *) export PATH="$_vla_venv/bin:$PATH" ;; esac
unset PYTHONHOME

# The ROS 2 wheels live in the venv: it is the underlay prefix.
_vla_prepend() {  # _vla_prepend VAR VALUE: prepend VALUE to VAR once
    local cur
    eval "cur=\${$1:-}"
    case ":$cur:" in *":$2:"*) ;; *) if [ -n "$cur" ]; then eval "export $1=\"\$2:\$cur\""; else eval "export $1=\"\$2\""; fi ;; esac
}
_vla_prepend AMENT_PREFIX_PATH "$_vla_venv"
_vla_prepend CMAKE_PREFIX_PATH "$_vla_venv"

# Library path of the ROS wheels (what ros_wheels_bootstrapper would set by re-executing python).
_vla_sp="$_vla_venv/lib/python3.11/site-packages"
for _vla_lib in "$_vla_sp"/ros_*.libs "$_vla_venv/lib"; do
    [ -d "$_vla_lib" ] && _vla_prepend LD_LIBRARY_PATH "$_vla_lib"
done

# Workspace overlay: vla_msgs, vla_policy, vla_policy_node (python path, libraries, ament index).
if [ -f "$VLA_ROOT/ros2_ws/install/local_setup.bash" ] || [ -f "$VLA_ROOT/ros2_ws/install/local_setup.sh" ]; then
    if [ -n "${ZSH_VERSION:-}" ] && [ -f "$VLA_ROOT/ros2_ws/install/local_setup.zsh" ]; then
        . "$VLA_ROOT/ros2_ws/install/local_setup.zsh"
    elif [ -n "${BASH_VERSION:-}" ]; then
        . "$VLA_ROOT/ros2_ws/install/local_setup.bash"
    else
        COLCON_CURRENT_PREFIX="$VLA_ROOT/ros2_ws/install" . "$VLA_ROOT/ros2_ws/install/local_setup.sh"
    fi
    for _vla_lib in "$VLA_ROOT"/ros2_ws/install/*/lib; do
        [ -d "$_vla_lib" ] && _vla_prepend LD_LIBRARY_PATH "$_vla_lib"
    done
else
    echo "env.sh: ros2_ws is not built yet (no ros2_ws/install); run: make setup" >&2
fi
# The library path is complete: child pythons need not re-execute themselves to set it.
export _ROS_WHEELS_BOOTSTRAP_COMPLETE=1

# ROS defaults for this project; an existing value wins.
export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-42}"
export ROS_AUTOMATIC_DISCOVERY_RANGE="${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}"
export RMW_IMPLEMENTATION="${RMW_IMPLEMENTATION:-rmw_fastrtps_cpp}"
export ROS_LOG_DIR="${ROS_LOG_DIR:-$VLA_ROOT/.state/ros_log}"
mkdir -p "$ROS_LOG_DIR"

unset _vla_here _vla_venv _vla_sp _vla_lib
unset -f _vla_prepend
