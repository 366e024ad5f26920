"""The three inference workers give the chunk that ``policy.predict_chunk`` gives for the same request.

The process worker is compared bit for bit (``np.array_equal``): the child runs the same code on the same
weights with one torch thread, and the arrays cross as raw bytes. Observations of several image sizes,
history frames and RTC guidance cross the shared memory channel unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from vla_policy.model.flow_matching import RTCGuidance
from vla_policy.model.policy import VLAPolicy
from vla_policy.observation import Observation
from vla_policy.runtime.inference import InferenceRequest, InferenceResult, ModelInfo, WorkerFailure
from vla_policy.runtime.inline_worker import InlineWorker
from vla_policy.runtime.policy_runner import PolicyRunner
from vla_policy.runtime.process_worker import ProcessWorker
from vla_policy.runtime.thread_worker import ThreadWorker
from worker_helpers import (
    RESULT_TIMEOUT,
    START_TIMEOUT,
    observation,
    spec_for,
    worker_memory,
    write_checkpoint,
)

CAMERAS = ("head", "left_wrist", "right_wrist")


def _obs(seed: int = 0) -> Observation:
    return observation(CAMERAS, [(64, 64)] * 3, seed=seed)


@pytest.fixture(scope="module")
def single_thread() -> Iterator[None]:
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("workers") / "tiny", seed=11)


@pytest.fixture(scope="module")
def history_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("workers") / "tiny-h2", seed=12, history_frames=2)


@pytest.fixture(scope="module")
def reference(checkpoint: Path, single_thread: None) -> VLAPolicy:
    return VLAPolicy.from_checkpoint(checkpoint)


@pytest.fixture(scope="module")
def started(checkpoint: Path) -> Iterator[tuple[ProcessWorker, ModelInfo]]:
    worker = ProcessWorker(spec_for(checkpoint))
    info = worker.start(START_TIMEOUT)
    yield worker, info
    worker.close()


@pytest.fixture
def process_worker(started: tuple[ProcessWorker, ModelInfo]) -> ProcessWorker:
    return started[0]


def _serve(worker: ProcessWorker | ThreadWorker, request: InferenceRequest) -> InferenceResult:
    worker.submit(request, now=0.0)
    result = worker.wait(RESULT_TIMEOUT)
    assert result is not None, f"no result within {RESULT_TIMEOUT} s"
    return result


def test_process_worker_chunk_is_bit_exact(process_worker: ProcessWorker, reference: VLAPolicy) -> None:
    obs = _obs(1)
    result = _serve(process_worker, InferenceRequest(1, obs, seed=7))
    assert result.error is None and result.request_id == 1
    expected = reference.predict_chunk(obs, seed=7)
    assert result.actions is not None and result.actions.dtype == np.float32
    assert np.array_equal(result.actions, expected.actions)
    assert result.dt == expected.dt


def test_process_worker_reports_the_model(
    started: tuple[ProcessWorker, ModelInfo], reference: VLAPolicy
) -> None:
    info = started[1]
    cfg = reference.config
    assert info.name == reference.name
    assert info.cameras == tuple(cfg.backbone.cameras)
    assert (info.image_size, info.history_frames) == (cfg.backbone.vision.image_size, 1)
    assert (info.horizon, info.dt, info.max_state_dim) == (cfg.action_horizon, cfg.dt, 64)
    assert info.action_dim == cfg.action_width == reference.predict_chunk(_obs(), seed=0).actions.shape[1]
    assert info.action_layout == cfg.action_layout
    assert set(info.action_layout) == {"left_arm", "right_arm", "claw"}
    assert info.backend == "torch" and info.backend_skipped == ()
    assert np.isfinite(info.warmup_s)


def test_rtc_request_crosses(process_worker: ProcessWorker, reference: VLAPolicy) -> None:
    obs = _obs(2)
    previous = reference.predict_chunk(obs, seed=3).actions[4:]  # 12 of 16 rows: the rest is free
    guidance = RTCGuidance(previous=previous, frozen_steps=3, overlap_steps=6, max_guidance_weight=4.0)
    result = _serve(process_worker, InferenceRequest(2, obs, seed=9, rtc=guidance))
    assert result.error is None and result.actions is not None
    guided = reference.predict_chunk(obs, seed=9, rtc=guidance).actions
    free = reference.predict_chunk(obs, seed=9).actions
    assert not np.array_equal(guided, free)  # the guidance changes the chunk: it must have crossed
    assert np.array_equal(result.actions, guided)


@pytest.mark.slow
def test_images_of_any_size_and_history_cross(history_checkpoint: Path, single_thread: None) -> None:
    # 3 cameras x 2 frames of 480x640 (5.5 MB) outgrow the first shared memory region (1 MiB)
    sizes = [(480, 640), (48, 80), (37, 51)]
    obs = observation(CAMERAS, sizes, history=2, seed=4)
    small = observation(CAMERAS, [(64, 64)] * 3, history=2, seed=5)
    expected = VLAPolicy.from_checkpoint(history_checkpoint)
    worker = ProcessWorker(spec_for(history_checkpoint))
    try:
        info = worker.start(START_TIMEOUT)
        assert info.history_frames == 2
        for i, o in enumerate((small, obs, small)):
            result = _serve(worker, InferenceRequest(10 + i, o, seed=i))
            assert result.error is None, result.error
            assert np.array_equal(result.actions, expected.predict_chunk(o, seed=i).actions)
    finally:
        worker.close()


def test_model_error_is_a_result_and_the_worker_stays_up(process_worker: ProcessWorker) -> None:
    obs = observation(CAMERAS[:2], [(64, 64)] * 2, seed=6)  # the right wrist camera is missing
    result = _serve(process_worker, InferenceRequest(3, obs, seed=0))
    assert result.actions is None and result.error is not None
    assert "right_wrist" in result.error and "\n" not in result.error
    assert process_worker.health() is None
    good = _serve(process_worker, InferenceRequest(4, _obs(), seed=0))
    assert good.error is None


def test_request_that_cannot_cross_is_an_error_result(process_worker: ProcessWorker) -> None:
    obs = _obs(10)
    images = dict(obs.images, head=np.array([["not", "pixels"]], dtype=object))
    process_worker.submit(InferenceRequest(7, replace(obs, images=images), seed=0), now=0.0)
    result = process_worker.wait(RESULT_TIMEOUT)
    assert result is not None and result.request_id == 7 and result.actions is None
    assert result.error is not None and "only numeric arrays cross" in result.error
    assert process_worker.health() is None


def test_second_request_while_one_is_in_flight_is_refused(process_worker: ProcessWorker) -> None:
    obs = _obs(7)
    process_worker.submit(InferenceRequest(5, obs, seed=0), now=0.0)
    with pytest.raises(WorkerFailure, match="request 5 is still in flight"):
        process_worker.submit(InferenceRequest(6, obs, seed=0), now=0.0)
    result = process_worker.wait(RESULT_TIMEOUT)
    assert result is not None and result.request_id == 5


def test_non_finite_chunk_is_an_error_result(checkpoint: Path) -> None:
    runner = PolicyRunner.load(spec_for(checkpoint, warmup_runs=0))
    with torch.no_grad():
        next(runner.policy.model.action_head.parameters()).fill_(float("nan"))
    result = runner.serve(InferenceRequest(1, _obs(), seed=0))
    assert result.actions is None
    assert result.error is not None and "non-finite" in result.error


def test_thread_worker_chunk_equals_predict_chunk(checkpoint: Path, reference: VLAPolicy) -> None:
    obs = _obs(8)
    worker = ThreadWorker(spec_for(checkpoint))
    try:
        info = worker.start(START_TIMEOUT)
        assert info.name == reference.name
        result = _serve(worker, InferenceRequest(1, obs, seed=7))
    finally:
        worker.close()
    assert result.error is None
    assert np.array_equal(result.actions, reference.predict_chunk(obs, seed=7).actions)
    assert worker.health() == "inference thread closed"


def test_inline_worker_releases_the_chunk_after_the_modelled_latency(
    checkpoint: Path, reference: VLAPolicy
) -> None:
    obs = _obs(9)
    worker = InlineWorker(spec_for(checkpoint), latency=0.3)
    worker.start(START_TIMEOUT)
    worker.submit(InferenceRequest(1, obs, seed=7), now=0.1)
    assert worker.poll(now=0.1) is None
    assert worker.poll(now=0.1 + 0.2) is None
    result = worker.poll(now=0.1 + 0.1 + 0.1 + 0.1)  # 0.4 as a simulated clock sums it
    assert result is not None and result.request_id == 1
    assert np.array_equal(result.actions, reference.predict_chunk(obs, seed=7).actions)
    assert worker.poll(now=10.0) is None


def test_inline_worker_wait_returns_at_once(checkpoint: Path) -> None:
    worker = InlineWorker(spec_for(checkpoint), latency=100.0)
    worker.start(START_TIMEOUT)
    worker.submit(InferenceRequest(1, _obs(), seed=0), now=0.0)
    result = worker.wait(0.0)
    assert result is not None and result.request_id == 1
    worker.close()
    with pytest.raises(WorkerFailure, match="inline worker closed"):
        worker.submit(InferenceRequest(2, _obs(), seed=0), now=0.0)


@pytest.mark.slow
def test_closing_frees_the_shared_memory(checkpoint: Path) -> None:
    before = worker_memory()
    worker = ProcessWorker(spec_for(checkpoint))
    worker.start(START_TIMEOUT)
    during = worker_memory()
    _serve(worker, InferenceRequest(1, observation(CAMERAS, [(480, 640)] * 3), seed=0))
    worker.close()
    assert len(during["fds"]) == len(before["fds"]) + 2  # the probe sees the two regions while running
    assert worker_memory() == before
