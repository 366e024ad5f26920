"""Real-time scheduling of the node's threads, as ros2_control's ``thread_priority``: the control thread at
``control_thread_priority`` (SCHED_FIFO), the node's other threads just below it (so one holding the GIL
is never preempted by outside load while the control thread waits for it), the model's process at normal
priority (the worker resets itself)."""

from __future__ import annotations

import os
import sys
from typing import Any


def raise_priority(priority: int, logger: Any) -> bool:
    """SCHED_FIFO ``priority`` for the calling thread (and the threads it starts); a warning where the
    process may not (no CAP_SYS_NICE, no rtprio limit). True when it took effect."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except (OSError, AttributeError) as exc:
        logger.warning(
            f"normal priority: SCHED_FIFO {priority} refused ({exc}); grant it with `ulimit -r` / "
            "limits.conf rtprio, or set control_thread_priority: 0",
            once=True,
        )
        return False
    return True


def schedule_process_threads(node: Any) -> None:
    """Call before the executor's threads start: they inherit a priority just below the control thread's,
    and a control thread waiting for the GIL gets it within a millisecond."""
    priority = int(node.get_parameter("control_thread_priority").value)
    if priority > 1:
        raise_priority(priority - 1, node.get_logger())
    sys.setswitchinterval(0.001)
