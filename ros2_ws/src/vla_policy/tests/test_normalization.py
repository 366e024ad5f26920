from __future__ import annotations

import numpy as np
import pytest
import torch
from vla_policy.model.config import NormalizationConfig
from vla_policy.model.normalization import FeatureStats, Normalizer


def _normalizer(config: NormalizationConfig | None = None) -> Normalizer:
    rng = np.random.default_rng(0)
    data = rng.normal(size=(500, 16)) * rng.uniform(0.1, 3.0, 16) + rng.uniform(-2, 2, 16)
    stats = FeatureStats.compute(data)
    return Normalizer({"state": stats, "action": stats}, config)


@pytest.mark.parametrize("mode", ["min_max", "mean_std", "identity"])
def test_round_trip_per_mode(mode: str) -> None:
    norm = _normalizer(NormalizationConfig(left_arm=mode, right_arm=mode, claw=mode))
    s = norm.stats["action"]
    x = ((s.min + s.max) / 2 + 0.3 * (s.max - s.min) * np.linspace(-1, 1, 16)).astype(np.float32)
    np.testing.assert_allclose(norm.unnormalize_action(norm.normalize_action(x)), x, rtol=1e-5, atol=1e-5)


def test_min_max_maps_range_to_minus_one_one() -> None:
    norm = _normalizer()
    s = norm.stats["state"]
    np.testing.assert_allclose(norm.normalize_state(s.min), -1.0, atol=1e-9)
    np.testing.assert_allclose(norm.normalize_state(s.max), 1.0, atol=1e-9)


def test_min_max_clips_out_of_range() -> None:
    norm = _normalizer()
    s = norm.stats["state"]
    assert np.all(norm.normalize_state(s.max + 10.0) == 1.0)


def test_torch_and_numpy_agree() -> None:
    norm = _normalizer(NormalizationConfig(claw="mean_std"))
    x = np.linspace(-1, 1, 16, dtype=np.float32)
    np.testing.assert_allclose(
        norm.normalize_action(torch.from_numpy(x)).numpy(), norm.normalize_action(x), rtol=1e-6
    )


def test_json_round_trip(tmp_path) -> None:
    norm = _normalizer()
    norm.to_json(tmp_path / "statistics.json")
    loaded = Normalizer.from_json(tmp_path / "statistics.json")
    np.testing.assert_array_equal(loaded.stats["action"].q99, norm.stats["action"].q99)


def test_statistics_missing_key_rejected(tmp_path) -> None:
    (tmp_path / "statistics.json").write_text('{"state": {"min": [0]}, "action": {}}')
    with pytest.raises(ValueError, match="missing statistics"):
        Normalizer.from_json(tmp_path / "statistics.json")


def test_action_dims_past_statistics_pass_through_and_state_dims_do_not() -> None:
    """The reference decoder's padded action dims have no statistics: identity; a state longer than its
    statistics is an error."""
    stats = FeatureStats.compute(np.array([[0.0, 2.0], [4.0, 6.0]]))
    norm = Normalizer({"state": stats, "action": stats})
    y = np.array([[1.0, -1.0, 0.25, -3.0]], dtype=np.float32)
    np.testing.assert_allclose(norm.unnormalize_action(y), [[4.0, 2.0, 0.25, -3.0]])
    with pytest.raises(ValueError, match="statistics cover 2"):
        norm.normalize_state(np.zeros(3, dtype=np.float32))


def test_q99_mode_maps_quantiles_and_always_clips() -> None:
    """GR00T's q99: [q01, q99] -> [-1, 1], clipped even with config.clip off (imports turn it off)."""
    stats = FeatureStats(
        min=np.array([-9.0]), max=np.array([9.0]), mean=np.zeros(1), std=np.ones(1),
        q01=np.array([0.0]), q99=np.array([2.0]),
    )  # fmt: skip
    norm = Normalizer(
        {"state": stats, "action": stats}, NormalizationConfig(clip=False, action_modes=("q99",))
    )
    np.testing.assert_allclose(
        norm.normalize_action(np.array([0.0, 1.0, 2.0, 5.0])[:, None]).ravel(), [-1, 0, 1, 1]
    )
    np.testing.assert_allclose(norm.unnormalize_action(np.array([[3.0]])), [[2.0]])
