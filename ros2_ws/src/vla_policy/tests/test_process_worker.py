"""The process worker's failures: a killed child, a corrupt checkpoint, another protocol version, a hung
child, a runtime that dies. None leaves a process or shared memory behind.

The hang is made without a test hook in the product: the child is frozen with SIGSTOP while a request is
in flight. That is the worst hang there is (it reads no message and handles no SIGTERM until it is
killed), so ``close()`` ending it covers a child stuck inside the model as well.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from vla_policy.runtime import process_worker as process_worker_module
from vla_policy.runtime.inference import InferenceRequest, WorkerFailure
from vla_policy.runtime.process_worker import ProcessWorker
from worker_helpers import (
    RESULT_TIMEOUT,
    START_TIMEOUT,
    child_pids,
    observation,
    process_gone,
    spec_for,
    wait_until,
    worker_memory,
    write_checkpoint,
)

pytestmark = pytest.mark.slow  # every test starts a child process (it imports torch and loads a model)

CAMERAS = ("head", "left_wrist", "right_wrist")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("process_worker") / "tiny", seed=21)


def _request(request_id: int) -> InferenceRequest:
    return InferenceRequest(request_id, observation(CAMERAS, [(64, 64)] * 3, seed=request_id), seed=0)


def test_sigkill_is_reported_and_a_new_start_serves(checkpoint: Path) -> None:
    before = worker_memory()
    worker = ProcessWorker(spec_for(checkpoint))
    worker.start(START_TIMEOUT)
    pid = worker.pid
    assert pid is not None and worker.health() is None
    os.kill(pid, signal.SIGKILL)
    assert wait_until(lambda: worker.health() is not None)
    assert worker.health() == "inference worker exited (killed by SIGKILL)"
    with pytest.raises(WorkerFailure, match=r"killed by SIGKILL"):
        worker.submit(_request(1), now=0.0)
    worker.close()
    assert worker_memory() == before  # the killed child's regions are freed with the runtime's close
    worker.start(START_TIMEOUT)
    assert worker.pid != pid
    worker.submit(_request(2), now=0.0)
    result = worker.wait(RESULT_TIMEOUT)
    assert result is not None and result.error is None and result.request_id == 2
    worker.close()
    assert worker_memory() == before


def test_death_with_a_request_in_flight_fails_the_poll(checkpoint: Path) -> None:
    worker = ProcessWorker(spec_for(checkpoint))
    worker.start(START_TIMEOUT)
    try:
        worker.submit(_request(1), now=0.0)
        assert worker.pid is not None
        os.kill(worker.pid, signal.SIGKILL)

        def poll() -> bool:  # a result that made it out before the kill would still be delivered
            worker.poll(now=0.0)
            return False

        with pytest.raises(WorkerFailure, match=r"inference worker exited \(killed by SIGKILL\)"):
            wait_until(poll)
    finally:
        worker.close()


def test_corrupt_checkpoint_fails_start_with_one_line_and_no_child(checkpoint: Path, tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    for f in checkpoint.iterdir():
        (corrupt / f.name).write_bytes(f.read_bytes())
    weights = corrupt / "model.safetensors"
    os.truncate(weights, weights.stat().st_size // 2)
    children, memory = child_pids(), worker_memory()
    worker = ProcessWorker(spec_for(corrupt))
    with pytest.raises(WorkerFailure) as failure:
        worker.start(START_TIMEOUT)
    reason = str(failure.value)
    assert "\n" not in reason
    assert reason.startswith(f"cannot load checkpoint '{corrupt}'") and "corrupt or truncated" in reason
    assert worker.pid is None and child_pids() <= children
    assert worker_memory() == memory
    assert worker.health() == "inference worker closed"


def test_protocol_version_mismatch_is_refused(checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    speaks = process_worker_module.PROTOCOL_VERSION
    monkeypatch.setattr(process_worker_module, "PROTOCOL_VERSION", speaks + 1)
    children = child_pids()
    worker = ProcessWorker(spec_for(checkpoint))
    with pytest.raises(WorkerFailure) as failure:
        worker.start(START_TIMEOUT)
    assert str(failure.value) == (
        f"protocol mismatch: the runtime speaks protocol {speaks + 1}, this inference worker speaks {speaks}"
    )
    assert child_pids() <= children


def test_close_ends_a_hung_child(checkpoint: Path, caplog: pytest.LogCaptureFixture) -> None:
    before = worker_memory()
    worker = ProcessWorker(spec_for(checkpoint), close_grace=0.5)
    worker.start(START_TIMEOUT)
    pid = worker.pid
    assert pid is not None
    worker.submit(_request(1), now=0.0)
    os.kill(pid, signal.SIGSTOP)  # hung: answers nothing, not even SIGTERM
    with caplog.at_level(logging.INFO, logger=process_worker_module.__name__):
        worker.close()
    assert process_gone(pid) and pid not in child_pids()
    assert f"inference worker {pid} ended (killed by SIGKILL)" in caplog.text
    assert worker.health() == "inference worker closed"
    assert worker_memory() == before


def test_close_of_an_idle_child_is_graceful(checkpoint: Path, caplog: pytest.LogCaptureFixture) -> None:
    worker = ProcessWorker(spec_for(checkpoint), close_grace=START_TIMEOUT)  # a bound: no SIGTERM
    worker.start(START_TIMEOUT)
    pid = worker.pid
    with caplog.at_level(logging.INFO, logger=process_worker_module.__name__):
        worker.close()
    assert f"inference worker {pid} ended (exit code 0)" in caplog.text


RUNTIME_SCRIPT = textwrap.dedent(
    """
    import sys
    from vla_policy.runtime.inference import PolicySpec
    from vla_policy.runtime.process_worker import ProcessWorker

    worker = ProcessWorker(PolicySpec(checkpoint=sys.argv[1], torch_threads=1))
    worker.start(float(sys.argv[2]))
    print(worker.pid, flush=True)
    sys.stdin.read()  # until this process is killed
    """
)


def test_child_exits_when_the_runtime_process_dies(checkpoint: Path) -> None:
    runtime = subprocess.Popen(
        [sys.executable, "-c", RUNTIME_SCRIPT, str(checkpoint), str(START_TIMEOUT)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert runtime.stdout is not None
        child = int(runtime.stdout.readline())
        assert not process_gone(child)
        runtime.kill()  # no close(), no atexit: the child must notice by itself
        runtime.wait()
        assert wait_until(lambda: process_gone(child))
    finally:
        runtime.kill()
        runtime.wait()
