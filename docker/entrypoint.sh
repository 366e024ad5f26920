#!/usr/bin/env bash
# Container entrypoint: source ROS 2 and the workspace overlay, then run the command
# (default: ros2 launch vla_policy_node bimanual.launch.py; extra launch arguments can follow).
set -e
# shellcheck disable=SC1090
source "/opt/ros/${ROS_DISTRO:-kilted}/setup.bash"
# shellcheck disable=SC1091
source /opt/vla/ros2_ws/install/setup.bash
export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-0}"
mkdir -p "${ROS_LOG_DIR:-/tmp/ros_log}"
if [[ $# -eq 0 ]]; then
    set -- ros2 launch vla_policy_node bimanual.launch.py
elif [[ "$1" == *:=* ]]; then
    # only launch arguments were given: keep the default launch
    set -- ros2 launch vla_policy_node bimanual.launch.py "$@"
fi
exec "$@"
