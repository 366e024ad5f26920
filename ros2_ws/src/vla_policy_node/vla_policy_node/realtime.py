"""Real-time scheduling of the control thread, as ros2_control's ``thread_priority``: the control thread at
``control_thread_priority`` (SCHED_FIFO); the node's other threads and the model's process at normal
priority (raising those too was measured to starve the model on a loaded 2-core machine: inference 6x
slower, see docs/benchmarks.md). A short GIL switch interval bounds how long the control thread waits for
the interpreter."""

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


def schedule_process_threads() -> None:
    """Call before the node's threads start: a control thread waiting for the GIL gets it within a
    millisecond (the interpreter's default is 5 ms)."""
    sys.setswitchinterval(0.001)
