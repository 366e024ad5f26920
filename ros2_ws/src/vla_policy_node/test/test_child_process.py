"""``ChildProcess``: output in a file, waiting for a line, and the SIGINT -> SIGTERM -> SIGKILL stop."""

from __future__ import annotations

import signal
import sys

import pytest
from vla_policy_node.child_process import ChildProcess

# A child that handles SIGINT and SIGTERM as told (exit 0, ignore, or Python's default), prints READY
# once its handlers are in place, then waits for signals.
CHILD = """
import signal, sys, time
modes = dict(zip(("int", "term"), sys.argv[1:3]))
for name, sig in (("int", signal.SIGINT), ("term", signal.SIGTERM)):
    if modes[name] == "exit":
        signal.signal(sig, lambda *_: sys.exit(0))
    elif modes[name] == "ignore":
        signal.signal(sig, signal.SIG_IGN)
print("READY", flush=True)
while True:
    time.sleep(0.05)
"""


def _child(tmp_path, on_int: str, on_term: str) -> ChildProcess:
    proc = ChildProcess([sys.executable, "-c", CHILD, on_int, on_term], log_path=tmp_path / "child.log")
    assert proc.wait_for("READY", 60), proc.output()
    return proc


@pytest.mark.parametrize(
    "on_int, on_term, code",
    [
        ("exit", "default", 0),  # a node: SIGINT is enough
        ("ignore", "default", -signal.SIGTERM),  # then SIGTERM
        ("ignore", "ignore", -signal.SIGKILL),  # then SIGKILL
    ],
)
def test_stop_escalates_until_the_child_exits(tmp_path, on_int, on_term, code):
    proc = _child(tmp_path, on_int, on_term)
    assert proc.stop(sigint_timeout=1.0, term_timeout=1.0) == code
    assert proc.poll() == code


def test_stop_of_an_exited_child_returns_its_code(tmp_path):
    proc = ChildProcess([sys.executable, "-c", "import sys; sys.exit(3)"], log_path=tmp_path / "c.log")
    assert proc.wait(timeout=60) == 3
    assert proc.stop() == 3


def test_output_goes_to_the_log_file_and_wait_for_sees_it(tmp_path):
    code = "import sys; print('hello out'); print('boom: error here', file=sys.stderr)"
    proc = ChildProcess([sys.executable, "-c", code], log_path=tmp_path / "c.log")
    assert proc.wait_for("error here", 60)
    proc.wait(timeout=60)
    text = (tmp_path / "c.log").read_text()
    assert "hello out" in text and "boom: error here" in text and proc.output() == text
    assert proc.last_line() == "boom: error here"


def test_wait_for_is_false_when_the_child_exits_without_the_line(tmp_path):
    proc = ChildProcess([sys.executable, "-c", "print('something else')"], log_path=tmp_path / "c.log")
    assert not proc.wait_for("READY", 60)
    assert proc.poll() == 0


def test_a_temporary_log_file_when_none_is_given():
    proc = ChildProcess([sys.executable, "-c", "print('x')"])
    try:
        assert proc.wait(timeout=60) == 0 and proc.output().strip() == "x"
    finally:
        proc.log_path.unlink()
