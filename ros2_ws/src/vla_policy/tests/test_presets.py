"""groot-n1.5 shapes, read off a model built on the meta device (no full-size run)."""

from __future__ import annotations

import json

import pytest
from vla_policy.cli import main


@pytest.fixture(scope="module")
def groot() -> dict:
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["describe", "--preset", "groot-n1.5", "--json"]) == 0
    return json.loads(buf.getvalue())


def test_groot_state_encoder_is_64_1024_1536(groot: dict) -> None:
    assert groot["shapes"]["state_encoder"] == [64, 1024, 1536]


def test_groot_action_encoder_w1_w2_w3(groot: dict) -> None:
    assert groot["shapes"]["action_encoder"] == {"W1": [32, 1536], "W2": [3072, 1536], "W3": [1536, 1536]}


def test_groot_dit_16_blocks_width_1536_cross_kv_from_2048(groot: dict) -> None:
    dit = groot["shapes"]["dit"]
    assert dit["blocks"] == 16 and dit["width"] == 1536
    assert dit["cross_kv"] == [2048, 1536]
    assert dit["cross_attention_blocks"] == [0, 2, 4, 6, 8, 10, 12, 14]  # alternating with self-attention
    assert dit["proj_out_2"] == [1536, 1024]


def test_groot_decoder_is_one_mlp_to_32(groot: dict) -> None:
    assert groot["shapes"]["decoders"] == {"action_decoder": [1024, 1024, 32]}


def test_seed_decoders_to_7_7_2() -> None:
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["describe", "--preset", "tiny-seed", "--json"]) == 0
    dec = json.loads(buf.getvalue())["shapes"]["decoders"]
    assert dec["shared_layer"] == [64, 64]
    assert dec["left_output_layer"] == [64, 7] and dec["right_output_layer"] == [64, 7]
    assert dec["action_claw_decoder"] == [64, 64, 2]


def test_groot_llm_built_only_to_select_layer(groot: dict) -> None:
    assert groot["shapes"]["llm_layers_built"] == 12
    assert groot["shapes"]["mlp1"] == [4 * 1152, 2048]  # Eagle's projector after the pixel shuffle
    assert groot["shapes"]["vl_self_attention_blocks"] == 4


def test_groot_parameter_total_is_sum_of_modules(groot: dict) -> None:
    params = dict(groot["parameters"])
    total = params.pop("total")
    assert total == sum(params.values())
    assert 2.0e9 < total < 3.0e9
