"""The core's Python ``logging`` through the node's ROS logger: one log format on the console, and the
core's warnings on ``/rosout`` beside the node's own."""

from __future__ import annotations

import logging
from typing import Any


class RosLogHandler(logging.Handler):
    """Forwards records of the ``vla_policy`` loggers to an rclpy logger."""

    def __init__(self, ros_logger: Any) -> None:
        super().__init__()
        self.ros_logger = ros_logger

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = f"[{record.name}] {record.getMessage()}"
            if record.levelno >= logging.ERROR:
                self.ros_logger.error(text)
            elif record.levelno >= logging.WARNING:
                self.ros_logger.warning(text)
            elif record.levelno >= logging.INFO:
                self.ros_logger.info(text)
            else:
                self.ros_logger.debug(text)
        except Exception:  # logging must never take the node down (e.g. during shutdown)
            self.handleError(record)


def forward_core_logs(ros_logger: Any, level: int = logging.INFO) -> RosLogHandler:
    """Send the ``vla_policy`` package's log records at ``level`` and above to ``ros_logger``."""
    handler = RosLogHandler(ros_logger)
    core = logging.getLogger("vla_policy")
    core.addHandler(handler)
    core.setLevel(level)
    core.propagate = False
    return handler
