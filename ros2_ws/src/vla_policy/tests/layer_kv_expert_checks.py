"""Checks shared by test_deep_fusion_expert.py and test_kv_cache_expert.py (one preset per file)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from vla_policy.model import llm_kv_cache
from vla_policy.model.experts.layer_kv_expert import LayerKVExpert
from vla_policy.model.flow_matching import RTCGuidance
from vla_policy.model.llm_kv_cache import PrefixKVCache, llm_prefix_kv, rope_cos_sin
from vla_policy.model.policy import VLAPolicy
from vla_policy.observation import Observation, PrefixOutput, synthetic_observation

INSTRUCTIONS = ("pick up the red cube", "put the small blue block into the box on the left please now")


def observations(policy: VLAPolicy) -> list[Observation]:
    """Two observations with different instruction lengths, so the shorter one is left padded."""
    cfg = policy.config.backbone
    return [
        synthetic_observation(cfg.cameras, 80, 16, instruction=text, seed=i)
        for i, text in enumerate(INSTRUCTIONS)
    ]


def batch_prefix(policy: VLAPolicy, with_kv: bool = True) -> tuple[PrefixOutput, torch.Tensor]:
    """-> (PrefixOutput for the 2-observation batch, normalised state [2, max_state_dim])."""
    obs = observations(policy)
    with torch.no_grad():
        prefix, _ = policy.encode_prefix_timed(obs, with_cross_kv=with_kv)
    assert not bool(prefix.attention_mask.all()), "the batch must contain left padding"
    return prefix, policy.prepare_state([o.state for o in obs])


def noise(policy: VLAPolicy, batch: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    h = policy.config.action_head
    return torch.randn(batch, policy.config.action_horizon, h.max_action_dim, generator=g)


def check_cached_equals_recomputed(policy: VLAPolicy) -> None:
    prefix, state = batch_prefix(policy)
    uncached, _ = batch_prefix(policy, with_kv=False)
    assert prefix.layer_kv is not None and uncached.layer_kv is None
    n = noise(policy, 2)
    with torch.no_grad():
        a = policy.expert.predict_chunk(prefix, state, n)
        b = policy.expert.predict_chunk(uncached, state, n, use_cache=False)
    assert a.shape == (2, policy.config.action_horizon, 16)
    assert torch.isfinite(a).all()
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def check_cache_length_unchanged(policy: VLAPolicy) -> None:
    prefix, state = batch_prefix(policy)
    cache = PrefixKVCache(prefix.layer_kv)
    length = cache.get_seq_length()
    before = [k.clone() for k in cache.keys]
    with torch.no_grad():
        for chunk in range(2):  # never grows across steps or chunks
            policy.expert.predict_chunk(prefix, state, noise(policy, 2, chunk), kv_cache=cache)
            assert [cache.get_seq_length(i) for i in range(len(cache))] == [length] * len(cache)
    assert all(torch.equal(k0, k1) for k0, k1 in zip(before, cache.keys, strict=True))
    assert prefix.attention_mask.shape[1] == length


def check_suffix_never_changes_prefix_kv(policy: VLAPolicy, monkeypatch) -> None:
    """Record the LLM side's K/V inside the joint (uncached) forward for two different suffixes: they are
    identical, and equal to the once-per-chunk prefix K/V (so the prefix never sees the suffix)."""
    expert: LayerKVExpert = policy.expert
    prefix, state = batch_prefix(policy)
    llm_layers = set(map(id, expert.llm.layers))
    recorded: list[list[torch.Tensor]] = []
    original = llm_kv_cache.project_qkv

    def spy(layer, x, cos, sin):
        q, k, v = original(layer, x, cos, sin)
        if id(layer) in llm_layers:
            recorded[-1] += [k, v]
        return q, k, v

    monkeypatch.setattr(llm_kv_cache, "project_qkv", spy)
    outs = []
    for seed, st in ((0, state), (1, -state + 0.5)):
        recorded.append([])
        ctx = expert.suffix_context(prefix, st, use_cache=False)
        with torch.no_grad():
            outs.append(expert.forward_velocity(prefix, ctx, noise(policy, 2, seed), torch.full((2,), 0.3)))
    assert not torch.allclose(outs[0], outs[1])  # the suffix did change
    expected = [t for kv in prefix.layer_kv for t in kv]
    for rec in recorded:
        assert len(rec) == len(expected)
        for got, want in zip(rec, expected, strict=True):
            torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    # the mask: prefix rows never attend to suffix columns
    blocks = expert.suffix_blocks(policy.config.action_horizon, torch.device("cpu"))
    length = prefix.attention_mask.shape[1]
    joint = llm_kv_cache.joint_attention_mask(prefix.attention_mask, blocks, expert.causal_prefix)
    assert not joint[:, :length, length:].any()


def check_action_tokens_see_each_other(policy: VLAPolicy) -> None:
    """Perturbing the last action's x_t changes the output of the first action (and vice versa)."""
    expert: LayerKVExpert = policy.expert
    prefix, state = batch_prefix(policy)
    ctx = expert.suffix_context(prefix, state, use_cache=True)
    x = noise(policy, 2)
    x2 = x.clone()
    x2[:, -1] += 1.0
    x3 = x.clone()
    x3[:, 0] += 1.0
    tv = torch.full((2,), 0.4)
    with torch.no_grad():
        base, last, first = (expert.forward_velocity(prefix, ctx, xi, tv) for xi in (x, x2, x3))
    assert (base[:, 0] - last[:, 0]).abs().max() > 1e-6
    assert (base[:, -1] - first[:, -1]).abs().max() > 1e-6


def check_llm_kv_matches_backbone(policy: VLAPolicy) -> None:
    """The helper runs the backbone's own layers: causal, it reproduces EagleBackbone.llm_hidden
    (left padding included) and its RoPE equals Qwen3's rotary embedding."""
    obs = observations(policy)
    inputs = policy.prepare_inputs(obs)
    bb = policy.model.backbone
    with torch.no_grad():
        vit = bb.encode_images(inputs["pixel_values"])
        ref = bb.llm_hidden(inputs["input_ids"], inputs["attention_mask"], vit)
        embeds = policy.expert.embed_prefix(inputs["input_ids"], inputs["attention_mask"], vit)
        kv, hidden = llm_prefix_kv(
            policy.expert.llm, embeds, inputs["attention_mask"], True, with_hidden=True
        )
    mask = inputs["attention_mask"]
    torch.testing.assert_close(hidden[mask], ref[mask], atol=1e-5, rtol=1e-5)
    lm = policy.config.backbone.language
    assert len(kv) == lm.select_layer
    assert kv[0][0].shape == (2, lm.num_key_value_heads, mask.shape[1], lm.head_dim)
    pos = torch.arange(7)[None]
    cos, sin = rope_cos_sin(pos, lm.head_dim, lm.rope_theta, torch.float32)
    hf_cos, hf_sin = policy.expert.llm.rotary_emb(embeds[:1, :7], pos)
    torch.testing.assert_close(cos, hf_cos)
    torch.testing.assert_close(sin, hf_sin)


def check_save_load_round_trip(policy: VLAPolicy, tmp_path: Path) -> None:
    policy.save(tmp_path / "ckpt")
    loaded = VLAPolicy.from_checkpoint(tmp_path / "ckpt")
    assert loaded.config == policy.config
    assert type(loaded.expert) is type(policy.expert)
    obs = observations(policy)[0]
    a = policy.predict_chunk(obs, seed=3).actions
    b = loaded.predict_chunk(obs, seed=3).actions
    np.testing.assert_allclose(a, b, atol=1e-6)


def check_rtc_and_training(policy: VLAPolicy) -> None:
    obs = observations(policy)[0]
    prev = np.full((policy.config.action_horizon, 16), 0.1, dtype=np.float32)
    res = policy.predict_chunk(obs, seed=0, rtc=RTCGuidance(prev, frozen_steps=3, overlap_steps=4))
    np.testing.assert_allclose(res.actions[:3], prev[:3], atol=1e-5)
    batch = policy.make_batch(observations(policy), [prev, prev])
    loss = policy.compute_loss(batch)
    loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for p in policy.expert.model.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)
    policy.model.zero_grad(set_to_none=True)
