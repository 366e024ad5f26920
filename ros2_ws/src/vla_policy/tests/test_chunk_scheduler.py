from __future__ import annotations

import numpy as np
import pytest
from vla_policy.runtime.chunk_scheduler import ChunkScheduler, ChunkSchedulerConfig
from vla_policy.strict_config import ConfigError, from_dict

DT = 0.02


def _ramp(T: int = 10, start: float = 0.0) -> np.ndarray:
    """Chunk whose action i has every dim equal to start + i."""
    return np.repeat((start + np.arange(T, dtype=np.float64))[:, None], 16, axis=1)


def _sched(**kw: object) -> ChunkScheduler:
    cfg = {"control_period": DT, "action_dt": DT}
    cfg.update(kw)
    return ChunkScheduler(from_dict(ChunkSchedulerConfig, cfg))


def test_needs_inference_without_chunk() -> None:
    assert _sched().needs_inference(0.0)


def test_no_action_without_chunk() -> None:
    assert _sched().next_action(0.0) is None


def test_actions_follow_time_from_observation() -> None:
    s = _sched()
    s.accept(_ramp(), obs_stamp=1.0, latency=0.0, now=1.0)
    assert s.next_action(1.0)[0] == pytest.approx(0.0)
    assert s.next_action(1.0 + 3 * DT)[0] == pytest.approx(3.0)


def test_past_actions_are_skipped_given_latency() -> None:
    s = _sched()
    switch = s.accept(_ramp(), obs_stamp=1.0, latency=0.1, now=1.1)
    assert switch.accepted and switch.skipped == 5
    assert s.next_action(1.1)[0] == pytest.approx(5.0)


def test_interpolates_between_actions() -> None:
    s = _sched()
    s.accept(_ramp(), obs_stamp=0.0, latency=0.0, now=0.0)
    assert s.next_action(2.5 * DT)[0] == pytest.approx(2.5)


def test_zero_order_hold_when_interpolation_is_off() -> None:
    s = _sched(interpolate=False)
    s.accept(_ramp(), obs_stamp=0.0, latency=0.0, now=0.0)
    assert s.next_action(2.7 * DT)[0] == pytest.approx(2.0)


def test_needs_inference_below_fraction_threshold() -> None:
    s = _sched(refill_threshold=0.5)
    s.accept(_ramp(10), obs_stamp=0.0, latency=0.0, now=0.0)
    assert not s.needs_inference(4 * DT)
    assert s.needs_inference(5.5 * DT)


def test_needs_inference_below_count_threshold() -> None:
    s = _sched(refill_threshold=3)
    s.accept(_ramp(10), obs_stamp=0.0, latency=0.0, now=0.0)
    assert not s.needs_inference(6.5 * DT)
    assert s.needs_inference(7.5 * DT)


def test_never_requests_while_inference_in_flight() -> None:
    s = _sched()
    s.begin_inference(0.0)
    assert not s.needs_inference(0.0)
    s.cancel_inference()
    assert s.needs_inference(0.0)


def test_accept_clears_in_flight() -> None:
    s = _sched()
    s.begin_inference(0.0)
    s.accept(_ramp(), obs_stamp=0.0, latency=0.0, now=0.0)
    assert not s.inference_in_flight


def test_new_chunk_replaces_old_without_blending() -> None:
    s = _sched()
    s.accept(_ramp(10, 0.0), obs_stamp=0.0, latency=0.0, now=0.0)
    s.accept(_ramp(10, 100.0), obs_stamp=4 * DT, latency=0.0, now=4 * DT)
    assert s.next_action(4 * DT)[0] == pytest.approx(100.0)


def test_exhausted_chunk_returns_none_and_counts_one_overrun() -> None:
    s = _sched()
    s.accept(_ramp(5), obs_stamp=0.0, latency=0.0, now=0.0)
    assert s.next_action(6 * DT) is None
    assert s.next_action(7 * DT) is None
    assert s.overruns == 1


def test_chunk_entirely_in_past_is_rejected() -> None:
    s = _sched()
    switch = s.accept(_ramp(5), obs_stamp=0.0, latency=1.0, now=1.0)
    assert not switch.accepted and "past" in switch.reason
    assert s.rejected == 1 and s.overruns == 1 and s.current is None


def test_non_finite_chunk_is_rejected() -> None:
    s = _sched()
    actions = _ramp(5)
    actions[2, 3] = np.nan
    switch = s.accept(actions, obs_stamp=0.0, latency=0.0, now=0.0)
    assert not switch.accepted and "non-finite" in switch.reason


def test_chunk_dt_can_differ_from_control_period() -> None:
    s = _sched(control_period=0.01)
    s.accept(_ramp(10), obs_stamp=0.0, latency=0.0, now=0.0, dt=0.1)
    assert s.next_action(0.3)[0] == pytest.approx(3.0)


def test_temporal_ensemble_weights_oldest_most() -> None:
    s = _sched(blending="temporal_ensemble", ensemble_m=np.log(3.0))
    s.accept(_ramp(10, 0.0), obs_stamp=0.0, latency=0.0, now=0.0)
    s.accept(_ramp(10, 100.0), obs_stamp=0.0, latency=0.0, now=0.0)
    # weights 1 and 1/3: (0 * 1 + 100 * 1/3) / (4/3) = 25
    assert s.next_action(0.0)[0] == pytest.approx(25.0)


def test_temporal_ensemble_drops_chunks_that_ended() -> None:
    s = _sched(blending="temporal_ensemble", ensemble_m=0.0)
    s.accept(_ramp(3, 0.0), obs_stamp=0.0, latency=0.0, now=0.0)
    s.accept(_ramp(10, 100.0), obs_stamp=2 * DT, latency=0.0, now=2 * DT)
    assert s.next_action(5 * DT)[0] == pytest.approx(103.0)


def test_remaining_returns_future_actions_with_offsets() -> None:
    s = _sched()
    s.accept(_ramp(10), obs_stamp=0.0, latency=0.0, now=0.0)
    actions, times = s.remaining(2.5 * DT)
    assert actions.shape == (7, 16) and actions[0, 0] == pytest.approx(3.0)
    assert times[0] == pytest.approx(0.5 * DT) and np.all(np.diff(times) > 0)


def test_remaining_with_temporal_ensemble_blends_like_next_action() -> None:
    """Trajectory output carries the ensemble too (it used to send the newest chunk alone)."""
    s = _sched(blending="temporal_ensemble", ensemble_m=np.log(3.0))
    s.accept(_ramp(10, 0.0), obs_stamp=0.0, latency=0.0, now=0.0)
    s.accept(_ramp(10, 100.0), obs_stamp=2 * DT, latency=0.0, now=2 * DT)
    actions, times = s.remaining(2 * DT)
    for a, t in zip(actions, times, strict=True):
        assert a[0] == pytest.approx(s.next_action(2 * DT + t)[0])
    # at 3 DT: old chunk at 3, new at 101; weights 1 and 1/3 -> (3 + 101 / 3) / (4 / 3) = 27.5
    assert actions[0, 0] == pytest.approx(27.5)


def test_reset_drops_chunks() -> None:
    s = _sched()
    s.accept(_ramp(), obs_stamp=0.0, latency=0.0, now=0.0)
    s.reset()
    assert s.next_action(0.0) is None and s.needs_inference(0.0)


def test_latency_estimate_rises_at_once_and_decays_slowly() -> None:
    s = _sched(latency_decay=0.5)
    s.accept(_ramp(), obs_stamp=0.0, latency=0.1, now=0.1)
    assert s.latency_estimate == pytest.approx(0.1)
    s.accept(_ramp(), obs_stamp=0.1, latency=0.02, now=0.12)
    assert s.latency_estimate == pytest.approx(0.06)


def test_rtc_guidance_is_none_without_rtc_mode() -> None:
    s = _sched()
    s.accept(_ramp(), obs_stamp=0.0, latency=0.0, now=0.0)
    assert s.rtc_guidance(0.0, 0.0, horizon=10) is None


def test_rtc_plan_is_empty_without_previous_chunk() -> None:
    assert _sched(blending="rtc").rtc_plan(0.0, 0.0, horizon=10) == {}


def test_rtc_previous_is_aligned_to_new_chunk_start() -> None:
    s = _sched(blending="rtc")
    s.accept(_ramp(10), obs_stamp=0.0, latency=0.0, now=0.0)
    plan = s.rtc_plan(obs_stamp=4 * DT, now=4 * DT, horizon=10)
    prev = plan["previous"]
    assert prev.shape == (10, 16)
    np.testing.assert_allclose(prev[:6, 0], [4, 5, 6, 7, 8, 9])
    np.testing.assert_allclose(prev[6:, 0], 9.0)  # past the end: last action held


def test_rtc_frozen_steps_follow_latency_and_control_period() -> None:
    s = _sched(blending="rtc")
    s.accept(_ramp(20), obs_stamp=0.0, latency=0.06, now=0.06)
    plan = s.rtc_plan(obs_stamp=0.1, now=0.1, horizon=20)
    # latency 0.06 s + one control period 0.02 s = 4 actions of 0.02 s
    assert plan["frozen_steps"] == 4
    assert plan["overlap_steps"] == 20 - 5 - 4


def test_rtc_frozen_steps_update_with_measured_latency() -> None:
    s = _sched(blending="rtc")
    s.accept(_ramp(20), obs_stamp=0.0, latency=0.02, now=0.02)
    before = s.rtc_plan(obs_stamp=0.04, now=0.04, horizon=20)["frozen_steps"]
    s.accept(_ramp(20), obs_stamp=0.04, latency=0.1, now=0.14)
    after = s.rtc_plan(obs_stamp=0.16, now=0.16, horizon=20)["frozen_steps"]
    assert after > before


def test_rtc_frozen_steps_are_capped_by_previous_coverage() -> None:
    s = _sched(blending="rtc")
    s.accept(_ramp(5), obs_stamp=0.0, latency=0.5, now=0.0)
    plan = s.rtc_plan(obs_stamp=2 * DT, now=2 * DT, horizon=10)
    assert plan["frozen_steps"] == 3 and plan["overlap_steps"] == 0


def test_rtc_overlap_is_limited_by_config() -> None:
    s = _sched(blending="rtc", rtc_overlap_steps=2)
    s.accept(_ramp(20), obs_stamp=0.0, latency=0.0, now=0.0)
    assert s.rtc_plan(obs_stamp=0.0, now=0.0, horizon=20)["overlap_steps"] == 2


def test_rtc_guidance_object_is_built() -> None:
    pytest.importorskip("vla_policy.model.flow_matching")
    s = _sched(blending="rtc", rtc_max_guidance_weight=3.0)
    s.accept(_ramp(10), obs_stamp=0.0, latency=0.02, now=0.02)
    g = s.rtc_guidance(obs_stamp=0.04, now=0.04, horizon=10)
    assert g is not None and g.previous.shape == (8, 16) and g.max_guidance_weight == 3.0
    assert g.frozen_steps == 2


def test_config_rejects_unknown_blending() -> None:
    with pytest.raises(ConfigError, match="blending"):
        ChunkSchedulerConfig(blending="average")


def test_config_rejects_non_positive_period() -> None:
    with pytest.raises(ConfigError, match="control_period"):
        ChunkSchedulerConfig(control_period=0.0)
