"""FiLM of the ViT blocks by the mean instruction embedding: zero gamma/beta is the identity."""

from __future__ import annotations

import torch
from cogvla_helpers import cog_policy, observation
from vla_policy.model.cogvla.film_vision import FiLM, instruction_embedding


def test_film_zero_init_is_exact_identity() -> None:
    film = FiLM(8, 16)
    x, cond = torch.randn(3, 5, 16), torch.randn(3, 8)
    assert torch.equal(film(x, cond), x)


def test_film_vit_with_zero_film_equals_plain_siglip() -> None:
    """The FiLMed block loop with fresh (zero) FiLM gives SigLIP's own output."""
    policy = cog_policy(film=True)
    bb = policy.model.backbone
    inputs = policy.prepare_inputs([observation(policy)])
    with torch.inference_mode():
        plain = bb.eagle_model.mlp1(bb.eagle_model.vision_model(inputs["pixel_values"]).last_hidden_state)
        filmed = bb.encode_images(inputs["pixel_values"], inputs["input_ids"], inputs["attention_mask"])
    assert filmed.shape == (3, 16, 64)
    torch.testing.assert_close(filmed, plain, atol=1e-6, rtol=1e-6)


def test_film_conditions_vision_on_the_instruction() -> None:
    """With non-zero FiLM weights, two instructions give different image tokens for the same images."""
    policy = cog_policy(film=True)
    bb = policy.model.backbone
    torch.manual_seed(1)
    for film in bb.cogvla.film:
        torch.nn.init.normal_(film.proj.weight, std=0.1)
    a = policy.prepare_inputs([observation(policy, instruction="pick up the red cube")])
    b = policy.prepare_inputs([observation(policy, instruction="open the drawer")])
    with torch.inference_mode():
        va = bb.encode_images(a["pixel_values"], a["input_ids"], a["attention_mask"])
        vb = bb.encode_images(b["pixel_values"], b["input_ids"], b["attention_mask"])
    assert not torch.allclose(va, vb)


def test_instruction_embedding_skips_image_and_padding() -> None:
    embed = torch.nn.Embedding(10, 4)
    ids = torch.tensor([[0, 1, 9, 9, 2], [1, 9, 9, 3, 3]])  # 0 = pad, 9 = <image>
    mask = torch.tensor([[False, True, True, True, True], [True, True, True, True, True]])
    out = instruction_embedding(embed, ids, mask, image_token_id=9)
    w = embed.weight
    torch.testing.assert_close(out[0], (w[1] + w[2]) / 2)
    torch.testing.assert_close(out[1], (w[1] + 2 * w[3]) / 3)
