"""A child process with its output in a log file, stopped the way a ROS 2 node expects.

``ChildProcess`` is a ``subprocess.Popen`` (``poll``, ``wait``, ``pid``, ``send_signal`` work as usual)
whose stdout and stderr go to a file, never a pipe: a pipe nobody reads fills up and blocks the child.
``output()`` reads what it wrote so far, ``wait_for(text)`` waits until a line appears (False when the
child exits or time runs out first), and ``stop()`` ends it like Ctrl-C: SIGINT, then SIGTERM, then
SIGKILL, each with a bounded wait, and returns the exit code. Used by ``vla-bag replay-eval``,
``vla-sim eval``, ``bench_control`` and the tests' harness.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path


class ChildProcess(subprocess.Popen):
    """``cmd`` started with its stdout and stderr in ``log_path`` (a new temporary file when None)."""

    def __init__(
        self,
        cmd: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike | None = None,
        log_path: str | os.PathLike | None = None,
        preexec_fn: Callable[[], object] | None = None,
    ) -> None:
        if log_path is None:
            fd, log_path = tempfile.mkstemp(prefix="child_", suffix=".log")
            os.close(fd)
        self.log_path = Path(log_path)
        with open(self.log_path, "wb") as log:  # the child keeps its own descriptor
            super().__init__(
                list(cmd),
                env=dict(env) if env is not None else None,
                cwd=cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=preexec_fn,
            )

    def output(self) -> str:
        """Everything the child has written so far."""
        return self.log_path.read_text(errors="replace")

    def wait_for(self, text: str, timeout: float, interval: float = 0.05) -> bool:
        """Wait until ``text`` appears in the output; False if the child exits or ``timeout`` passes first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output():
                return True
            if self.poll() is not None:
                return text in self.output()
            time.sleep(interval)
        return False

    def stop(self, sigint_timeout: float = 5.0, term_timeout: float = 3.0, kill_timeout: float = 10.0) -> int:
        """SIGINT (a node shuts down cleanly on it), then SIGTERM, then SIGKILL; the exit code.

        Each signal waits at most its timeout for the child to exit; an exited child is left as it is.
        """
        if self.poll() is None:
            for sig, timeout in ((signal.SIGINT, sigint_timeout), (signal.SIGTERM, term_timeout)):
                self.send_signal(sig)  # a no-op once the child has exited
                try:
                    self.wait(timeout=timeout)
                    break
                except subprocess.TimeoutExpired:
                    continue
            if self.poll() is None:
                self.kill()
                self.wait(timeout=kill_timeout)
        return int(self.returncode)

    def last_line(self, limit: int = 300) -> str:
        """The last output line that mentions an error, else the last line: for one-line reports."""
        lines = [ln for ln in self.output().splitlines() if ln.strip()]
        errors = [ln for ln in lines if "error" in ln.lower()]
        return (errors or lines or ["(no output)"])[-1][:limit]
