from __future__ import annotations

import numpy as np
import pytest
from vla_policy.runtime.joint_groups import ActionLayout, JointGroups, JointMappingError
from vla_policy.strict_config import ConfigError, from_dict


def _groups() -> JointGroups:
    return JointGroups(
        left_arm=tuple(f"left_j{i}" for i in range(6)),
        right_arm=tuple(f"right_j{i}" for i in range(6)),
        claw=("left_claw", "right_claw"),
    )


def test_from_dict_builds_tuples() -> None:
    g = from_dict(JointGroups, {"left_arm": ["a", "b"], "right_arm": ["c"], "claw": ["d"]})
    assert g.joint_names == ("a", "b", "c", "d")


def test_from_dict_unknown_key_suggests_nearest() -> None:
    with pytest.raises(ConfigError, match="left_arm"):
        from_dict(JointGroups, {"left_armm": ["a"]})


def test_duplicate_names_are_rejected() -> None:
    with pytest.raises(ConfigError, match="duplicate"):
        JointGroups(left_arm=("a",), right_arm=("a",))


def test_too_many_arm_joints_are_rejected() -> None:
    with pytest.raises(ConfigError, match="the model has 7 actions for it"):
        JointGroups(left_arm=tuple(f"j{i}" for i in range(8)))


def test_too_many_claw_joints_are_rejected() -> None:
    with pytest.raises(ConfigError, match="the model has 2 actions for it"):
        JointGroups(left_arm=("a",), claw=("c1", "c2", "c3"))


def test_no_joints_is_rejected() -> None:
    with pytest.raises(ConfigError, match="no joints"):
        JointGroups()


def test_state_is_in_group_order_regardless_of_message_order() -> None:
    g = _groups()
    names = list(reversed(g.joint_names))
    positions = [float(i) for i in range(len(names))]
    state = g.state_from_joint_state(names, positions)
    expected = {n: p for n, p in zip(names, positions, strict=True)}
    assert state.dtype == np.float32
    np.testing.assert_allclose(state, [expected[n] for n in g.joint_names])


def test_extra_unknown_joints_are_ignored() -> None:
    g = JointGroups(left_arm=("a",), claw=("c",))
    np.testing.assert_allclose(g.state_from_joint_state(["x", "c", "a"], [9.0, 2.0, 1.0]), [1.0, 2.0])


def test_missing_joint_is_reported_by_name() -> None:
    g = JointGroups(left_arm=("a", "b"))
    with pytest.raises(JointMappingError, match=r"missing.*'b'"):
        g.state_from_joint_state(["a"], [0.0])


def test_nan_position_is_reported_by_name() -> None:
    g = JointGroups(left_arm=("a", "b"))
    with pytest.raises(JointMappingError, match=r"non-finite.*'b'"):
        g.state_from_joint_state(["a", "b"], [0.0, float("nan")])


def test_names_positions_length_mismatch_is_reported() -> None:
    g = JointGroups(left_arm=("a", "b"))
    with pytest.raises(JointMappingError, match="names"):
        g.state_from_joint_state(["a", "b"], [0.0])


def test_duplicate_joint_in_message_is_reported() -> None:
    g = JointGroups(left_arm=("a",))
    with pytest.raises(JointMappingError, match="twice"):
        g.state_from_joint_state(["a", "a"], [0.0, 1.0])


def test_split_actions_uses_listed_joints_and_ignores_extra_dims() -> None:
    g = _groups()
    actions = np.arange(3 * 16, dtype=np.float32).reshape(3, 16)
    parts = g.split_actions(actions)
    assert parts["left_arm"].shape == (3, 6)
    np.testing.assert_array_equal(parts["left_arm"], actions[:, 0:6])
    np.testing.assert_array_equal(parts["right_arm"], actions[:, 7:13])
    np.testing.assert_array_equal(parts["claw"], actions[:, 14:16])


def test_split_actions_skips_empty_groups() -> None:
    g = JointGroups(left_arm=("a",))
    assert set(g.split_actions(np.zeros((2, 16)))) == {"left_arm"}


def test_split_single_action_returns_vectors() -> None:
    parts = _groups().split_actions(np.zeros(16))
    assert parts["claw"].shape == (2,)


def test_split_actions_wrong_width_is_rejected() -> None:
    with pytest.raises(JointMappingError, match="16"):
        _groups().split_actions(np.zeros((2, 14)))


def test_select_and_expand_are_inverse_on_listed_dims() -> None:
    g = _groups()
    actions = np.random.default_rng(0).normal(size=(4, 16))
    selected = g.select_actions(actions)
    assert selected.shape == (4, g.state_dim)
    back = g.expand_to_actions(selected)
    idx = g.action_indices()
    np.testing.assert_array_equal(back[:, idx], actions[:, idx])
    assert np.all(back[:, [6, 13]] == 0.0)


def test_a_reference_layout_maps_groups_to_non_contiguous_action_indices() -> None:
    """A 32-dim action whose grippers sit after each arm (as a GR00T modality map may order them)."""
    layout = ActionLayout(
        left_arm=tuple(range(0, 6)), right_arm=tuple(range(7, 13)), claw=(6, 13), action_dim=32
    )
    g = JointGroups(
        left_arm=tuple(f"l{i}" for i in range(6)),
        right_arm=tuple(f"r{i}" for i in range(6)),
        claw=("lg", "rg"),
        layout=layout,
    )
    actions = np.arange(32, dtype=np.float32)[None]
    parts = g.split_actions(actions)
    assert parts["claw"][0].tolist() == [6.0, 13.0]
    assert parts["right_arm"][0].tolist() == [7.0, 8.0, 9.0, 10.0, 11.0, 12.0]
    back = g.expand_to_actions(g.select_actions(actions), fill=-1.0)
    assert back.shape == (1, 32) and back[0, 13] == 13.0 and back[0, 31] == -1.0


def test_a_layout_that_uses_an_index_twice_is_refused() -> None:
    with pytest.raises(ConfigError, match="used twice"):
        ActionLayout(left_arm=(0, 1), right_arm=(1, 2), claw=(3,), action_dim=4)


def test_joints_that_do_not_fit_the_models_layout_are_refused() -> None:
    g = _groups()
    small = ActionLayout.from_spans({"left_arm": (0, 2), "right_arm": (2, 2), "claw": (4, 1)}, 5)
    with pytest.raises(ConfigError, match="left_arm"):
        g.with_layout(small)
