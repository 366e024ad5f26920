"""GR00T N1.5 import at full size, on the meta device (no memory): the official key names and shapes
(from the reference implementation built at GR00T N1.5-3B's shapes, ``official_keys_full_size.json``) map
strictly onto the ``groot-n1.5`` preset, and the importer turns the official config into that preset."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from vla_policy.model.groot_import import (
    UNUSED_KEYS,
    GrootImportError,
    ModalityMap,
    build_config,
    expected_shapes,
    map_weights,
    read_statistics,
)
from vla_policy.model.presets import get_preset

FIXTURE = Path(__file__).parent / "fixtures" / "groot_n15_tiny"


@pytest.fixture(scope="module")
def official() -> dict:
    return json.loads((FIXTURE / "official_keys_full_size.json").read_text())


@pytest.fixture(scope="module")
def modality() -> ModalityMap:
    return ModalityMap.from_yaml(FIXTURE / "modality.yaml")


def _meta(keys: dict[str, list[int]]) -> dict[str, torch.Tensor]:
    return {k: torch.empty(v, device="meta") for k, v in keys.items()}


def test_full_size_official_keys_map_onto_the_preset(official: dict) -> None:
    weights = map_weights(_meta(official["keys"]), expected_shapes(get_preset("groot-n1.5")), "full size")
    dropped = [k for k in official["keys"] if any(p.fullmatch(k) for p in UNUSED_KEYS)]
    assert "backbone.eagle_model.language_model.lm_head.weight" in dropped
    assert all(".lm_head." in k or ".vision_model.head." in k for k in dropped)
    assert len(weights) + len(dropped) == len(official["keys"])
    assert 2.40e9 < sum(t.numel() for t in weights.values()) < 2.42e9


def test_full_size_shape_change_is_named(official: dict) -> None:
    keys = dict(official["keys"])
    keys["action_head.action_decoder.layer2.W"] = [32, 1024, 16]  # a 16-dim decoder: not GR00T N1.5's
    with pytest.raises(GrootImportError, match=r"action_decoder\.layer2\.W has shape \(32, 1024, 16\)"):
        map_weights(_meta(keys), expected_shapes(get_preset("groot-n1.5")), "full size")


def test_official_config_builds_the_preset(official: dict, modality: ModalityMap) -> None:
    """config.json of GR00T N1.5-3B + Eagle's full-size config -> exactly groot-n1.5's architecture."""
    eagle = json.loads((FIXTURE / "checkpoint" / "eagle2_hg_model" / "config.json").read_text())
    eagle["force_image_size"] = 224
    eagle["vision_config"].update(
        hidden_size=1152,
        intermediate_size=4304,
        num_hidden_layers=27,
        num_attention_heads=16,
        image_size=224,
        patch_size=14,
    )
    eagle["text_config"].update(
        vocab_size=151680,
        hidden_size=2048,
        intermediate_size=6144,
        num_hidden_layers=28,
        num_attention_heads=16,
        num_key_value_heads=8,
        head_dim=128,
        max_position_embeddings=40960,
    )
    metadata = json.loads((FIXTURE / "checkpoint" / "experiment_cfg" / "metadata.json").read_text())
    _, dims = read_statistics(metadata, modality, FIXTURE)
    groot = {**official["config"], "model_type": "gr00t_n1_5"}
    cfg = build_config(groot, eagle, {"tokens_per_tile": 64}, modality, dims, "imported")
    preset = get_preset("groot-n1.5")
    assert cfg.backbone.vision == preset.backbone.vision
    assert cfg.backbone.language == preset.backbone.language
    assert cfg.backbone.tokens_per_image == preset.backbone.tokens_per_image == 64
    assert cfg.action_head == preset.action_head
    assert dataclasses.replace(cfg.decoder, group_spans=()) == preset.decoder
    assert cfg.num_inference_steps == 4 and cfg.action_horizon == 16


def test_tokens_per_tile_must_match_the_vision_geometry(official: dict, modality: ModalityMap) -> None:
    eagle = json.loads((FIXTURE / "checkpoint" / "eagle2_hg_model" / "config.json").read_text())
    metadata = json.loads((FIXTURE / "checkpoint" / "experiment_cfg" / "metadata.json").read_text())
    _, dims = read_statistics(metadata, modality, FIXTURE)
    groot = json.loads((FIXTURE / "checkpoint" / "config.json").read_text())
    with pytest.raises(GrootImportError, match="tokens_per_tile 16 but the vision geometry gives 4"):
        build_config(groot, eagle, {"tokens_per_tile": 16}, modality, dims, "x")


def _build(tmp_path: Path, old: str, new: str):  # type: ignore[no-untyped-def]
    (tmp_path / "m.yaml").write_text((FIXTURE / "modality.yaml").read_text().replace(old, new))
    modality = ModalityMap.from_yaml(tmp_path / "m.yaml")
    metadata = json.loads((FIXTURE / "checkpoint" / "experiment_cfg" / "metadata.json").read_text())
    _, dims = read_statistics(metadata, modality, FIXTURE)
    eagle = json.loads((FIXTURE / "checkpoint" / "eagle2_hg_model" / "config.json").read_text())
    groot = json.loads((FIXTURE / "checkpoint" / "config.json").read_text())
    return build_config(groot, eagle, {"tokens_per_tile": 4}, modality, dims, "x")


def test_action_keys_of_one_group_are_joined(tmp_path: Path) -> None:
    cfg = _build(tmp_path, "action.right_arm: right_arm", "action.right_arm: claw")
    assert cfg.action_layout == {"left_arm": (0, 7), "claw": (7, 9)}


def test_unused_action_key_keeps_its_dims(tmp_path: Path) -> None:
    cfg = _build(tmp_path, "action.left_arm: left_arm", "action.left_arm: none")
    assert cfg.action_layout == {"right_arm": (7, 7), "claw": (14, 2)}


def test_group_split_by_other_keys_is_refused(tmp_path: Path) -> None:
    with pytest.raises(GrootImportError, match="action group 'claw' is split by other keys"):
        _build(tmp_path, "action.left_arm: left_arm", "action.left_arm: claw")


def test_state_groups_out_of_order_are_refused(tmp_path: Path) -> None:
    text = "state.left_arm: left_arm\n  state.right_arm: right_arm"
    with pytest.raises(GrootImportError, match="state groups must come first, in the order"):
        _build(tmp_path, text, "state.left_arm: right_arm\n  state.right_arm: left_arm")


def test_unknown_embodiment_tag_is_refused(tmp_path: Path) -> None:
    text = (FIXTURE / "modality.yaml").read_text().replace("new_embodiment", "my_robot")
    (tmp_path / "m.yaml").write_text(text)
    modality = ModalityMap.from_yaml(tmp_path / "m.yaml")
    metadata = json.loads((FIXTURE / "checkpoint" / "experiment_cfg" / "metadata.json").read_text())
    with pytest.raises(GrootImportError, match="no entry for embodiment 'my_robot'"):
        read_statistics(metadata, modality, FIXTURE)


def test_unknown_group_in_modality_map_is_refused(tmp_path: Path) -> None:
    text = (FIXTURE / "modality.yaml").read_text().replace("action.claw: claw", "action.claw: gripper")
    (tmp_path / "m.yaml").write_text(text)
    with pytest.raises(GrootImportError, match=r"action\.claw maps to 'gripper'"):
        ModalityMap.from_yaml(tmp_path / "m.yaml")


def test_modality_map_unknown_key_names_the_nearest(tmp_path: Path) -> None:
    (tmp_path / "m.yaml").write_text((FIXTURE / "modality.yaml").read_text() + "normalisation: {}\n")
    with pytest.raises(GrootImportError, match="did you mean 'normalization'"):
        ModalityMap.from_yaml(tmp_path / "m.yaml")


def test_normalization_of_an_unlisted_key_is_refused(tmp_path: Path) -> None:
    text = (FIXTURE / "modality.yaml").read_text() + "normalization:\n  state.claws: identity\n"
    (tmp_path / "m.yaml").write_text(text)
    with pytest.raises(GrootImportError, match=r"did you mean 'state\.claw'"):
        ModalityMap.from_yaml(tmp_path / "m.yaml")
