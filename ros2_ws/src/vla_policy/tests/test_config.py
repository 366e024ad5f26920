from __future__ import annotations

import pytest
from vla_policy.model.config import ActionHeadConfig, LanguageConfig, ModelConfig, NormalizationConfig
from vla_policy.model.presets import get_preset
from vla_policy.strict_config import ConfigError, from_dict, replace, to_dict


def test_unknown_key_names_nearest_valid_key() -> None:
    with pytest.raises(ConfigError, match="did you mean 'action_horizon'"):
        from_dict(ModelConfig, {"action_horizn": 16})


def test_unknown_nested_key_names_nearest_valid_key() -> None:
    with pytest.raises(ConfigError, match="did you mean 'select_layer'"):
        from_dict(ModelConfig, {"backbone": {"language": {"select_layers": 2}}})


def test_select_layer_beyond_layer_count_is_rejected() -> None:
    with pytest.raises(ConfigError, match="select_layer 5 is beyond the layer count"):
        LanguageConfig(num_hidden_layers=4, select_layer=5)


def test_action_dim_above_max_action_dim_is_rejected() -> None:
    with pytest.raises(ConfigError, match="action_dim 40 is above max_action_dim 32"):
        ActionHeadConfig(action_dim=40)


def test_dit_width_must_match_input_embedding_dim() -> None:
    with pytest.raises(ConfigError, match="input_embedding_dim"):
        ActionHeadConfig(input_embedding_dim=128)


def test_unknown_normalization_mode_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"normalization\.claw"):
        NormalizationConfig(claw="zscore")


def test_unknown_preset_names_nearest() -> None:
    with pytest.raises(ConfigError, match=r"did you mean 'groot-n1\.5'"):
        get_preset("groot-n15")


def test_config_dict_round_trip_is_exact() -> None:
    for name in ("tiny", "groot-n1.5"):
        cfg = get_preset(name)
        assert from_dict(ModelConfig, to_dict(cfg)) == cfg


def test_replace_validates_new_values() -> None:
    with pytest.raises(ConfigError, match="num_inference_steps"):
        replace(get_preset("tiny"), num_inference_steps=0)


NEW_KEYS = {  # the keys the reference architecture added; an older config.json has none of them
    "backbone": ("projector", "pixel_shuffle", "projector_layers", "prompt", "image_preprocessing"),
    "action_head": ("attention_bias", "use_vl_mask", "dropout", "init_std"),
    "decoder": ("layout", "group_spans"),
    "normalization": ("state_modes", "action_modes"),
}


def test_config_without_the_new_keys_is_the_seed_architecture() -> None:
    old = to_dict(get_preset("tiny-seed"))
    for section, keys in NEW_KEYS.items():
        for key in keys:
            old[section].pop(key)
    old.pop("embodiment_id")
    assert from_dict(ModelConfig, old) == get_preset("tiny-seed")
    assert get_preset("tiny-seed").decoder.layout == "split"


def test_reference_layout_needs_the_full_padded_action_width() -> None:
    cfg = get_preset("tiny")
    with pytest.raises(ConfigError, match="must equal max_action_dim 32"):
        replace(cfg, action_head=replace(cfg.action_head, action_dim=16))
