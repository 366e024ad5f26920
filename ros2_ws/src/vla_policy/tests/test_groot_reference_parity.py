"""An independently built GR00T N1.5 checkpoint, imported with ``vla-policy import``, gives the reference's
outputs: the prompt, the pixel values, one step's velocity, the action chunk from raw images + instruction
+ state, and the training loss (fp32, max abs <= 1e-4).

The fixture (``fixtures/groot_n15_tiny``) was written by lerobot 0.4.4's ``lerobot.policies.groot`` at a
tiny config, with its own processors, by ``scripts/make_groot_reference_fixture.py`` (its docstring says
how to regenerate it, in a venv of its own).
"""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from vla_policy.cli import main
from vla_policy.model.policy import VLAPolicy
from vla_policy.observation import Observation

FIXTURE = Path(__file__).parent / "fixtures" / "groot_n15_tiny"
TOL = 1e-4


@pytest.fixture(scope="module")
def reference() -> dict[str, torch.Tensor]:
    return load_file(str(FIXTURE / "reference.safetensors"))


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("imported") / "groot"
    code = main(
        [
            "import",
            str(FIXTURE / "checkpoint"),
            "--modality",
            str(FIXTURE / "modality.yaml"),
            "--out",
            str(out),
        ]
    )
    assert code == 0
    return out


@pytest.fixture(scope="module")
def policy(imported: Path) -> VLAPolicy:
    return VLAPolicy.from_checkpoint(imported, dtype=torch.float32)


def _observation(reference: dict[str, torch.Tensor]) -> Observation:
    meta = json.loads((FIXTURE / "reference.json").read_text())
    images = {c: reference[f"image.{c}"].numpy() for c in meta["cameras"]}
    return Observation(images=images, state=reference["state"].numpy(), instruction=meta["instruction"])


def test_imported_config_is_the_reference_layout(policy: VLAPolicy) -> None:
    cfg = policy.config
    assert cfg.decoder.layout == "reference" and cfg.action_width == 32
    assert cfg.action_layout == {"left_arm": (0, 7), "right_arm": (7, 7), "claw": (14, 2)}
    assert cfg.embodiment_id == 31  # new_embodiment
    assert cfg.backbone.prompt == "chat" and cfg.backbone.pixel_shuffle
    assert not cfg.backbone.tune_llm and not cfg.backbone.tune_visual  # GR00T's fine-tuning defaults
    assert cfg.action_head.tune_projector and cfg.action_head.tune_diffusion_model


def test_prompt_and_pixels_match_the_reference_processor(
    policy: VLAPolicy, reference: dict[str, torch.Tensor]
) -> None:
    inputs = policy.prepare_inputs([_observation(reference)])
    assert inputs["input_ids"][0].tolist() == reference["input_ids"].tolist()
    assert bool(inputs["attention_mask"].all())
    torch.testing.assert_close(inputs["pixel_values"], reference["pixel_values"], atol=1e-6, rtol=0)


def test_first_step_velocity_matches(policy: VLAPolicy, reference: dict[str, torch.Tensor]) -> None:
    obs = _observation(reference)
    noise = reference["noise"][None]
    with torch.inference_mode():
        prefix = policy.encode_prefix(obs)
        state = policy.prepare_state([obs.state])
        x1 = policy.expert.predict_chunk(prefix, state, noise, embodiment_id=31, num_steps=1)
    assert (x1[0] - noise[0] - reference["velocity"]).abs().max().item() <= TOL


def test_normalised_chunk_matches(policy: VLAPolicy, reference: dict[str, torch.Tensor]) -> None:
    """Four Euler steps over all 32 dims: the padded dims' predictions feed back as the reference's do
    (the seed's exact ``-noise`` velocity for them puts this chunk 0.075 off)."""
    obs = _observation(reference)
    with torch.inference_mode():
        prefix = policy.encode_prefix(obs)
        state = policy.prepare_state([obs.state])
        chunk = policy.expert.predict_chunk(prefix, state, reference["noise"][None], embodiment_id=31)
    assert (chunk[0] - reference["chunk_normalized"]).abs().max().item() <= TOL


def test_padded_batch_matches_attending_to_the_padding(
    policy: VLAPolicy, reference: dict[str, torch.Tensor]
) -> None:
    """Two prompts of different lengths, left-padded as lerobot's collate does: the reference applies no
    VL attention mask, so the padded row's actions depend on the padding tokens (0.039 off with a mask)."""
    meta = json.loads((FIXTURE / "reference.json").read_text())
    first = _observation(reference)
    second = Observation(
        images={c: reference[f"pair.image.{c}"].numpy() for c in meta["cameras"]},
        state=reference["pair.state"].numpy(),
        instruction=meta["pair_instruction"],
    )
    inputs = policy.prepare_inputs([first, second])
    assert inputs["input_ids"].tolist() == reference["pair.input_ids"].tolist()
    assert inputs["attention_mask"].long().tolist() == reference["pair.attention_mask"].tolist()
    assert not bool(inputs["attention_mask"].all())
    with torch.inference_mode():
        prefix = policy.encode_prefix([first, second])
        state = policy.prepare_state([first.state, second.state])
        chunk = policy.expert.predict_chunk(prefix, state, reference["pair.noise"], embodiment_id=31)
    assert (chunk - reference["pair.chunk_normalized"]).abs().max().item() <= TOL


def test_chunk_from_raw_observation_matches(policy: VLAPolicy, reference: dict[str, torch.Tensor]) -> None:
    """Raw images + instruction + state in, unnormalised actions out (the reference's postprocessor)."""
    res = policy.predict_chunk(_observation(reference), noise=reference["noise"])
    assert res.actions.shape == (16, 32)
    assert float(np.abs(res.actions[:, :16] - reference["chunk"].numpy()).max()) <= TOL
    np.testing.assert_array_equal(res.groups["claw"], res.actions[:, 14:16])


def test_training_loss_matches(policy: VLAPolicy, reference: dict[str, torch.Tensor]) -> None:
    batch = policy.make_batch([_observation(reference)], [reference["train_actions"].numpy()])
    with torch.no_grad():
        loss = policy.compute_loss(
            {**batch, "noise": reference["loss_noise"][None], "t": reference["loss_t"]}
        )
    assert abs(loss.item() - reference["loss"].item()) <= TOL


def test_bf16_import_holds_bf16_weights_and_runs(
    tmp_path: Path, policy: VLAPolicy, reference: dict[str, torch.Tensor]
) -> None:
    out = tmp_path / "bf16"
    args = ["import", str(FIXTURE / "checkpoint"), "--modality", str(FIXTURE / "modality.yaml")]
    assert main([*args, "--out", str(out), "--dtype", "bfloat16"]) == 0
    low = VLAPolicy.from_checkpoint(out, dtype=torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in low.model.parameters())
    res = low.predict_chunk(_observation(reference), noise=reference["noise"])
    assert np.all(np.isfinite(res.actions))
    # the stored weights are bf16 already: only the bf16 arithmetic differs from fp32
    assert float(np.abs(res.actions[:, :16] - reference["chunk"].numpy()).max()) < 0.2


def _run(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    return code, err.getvalue()


def _copy_fixture(tmp_path: Path) -> Path:
    import shutil

    dst = tmp_path / "src"
    shutil.copytree(FIXTURE / "checkpoint", dst)
    return dst


@pytest.mark.parametrize(
    ("remove", "expected"),
    [
        ("experiment_cfg/metadata.json", "metadata.json: missing"),
        ("eagle2_hg_model/tokenizer_config.json", "tokenizer_config.json: missing"),
        ("eagle2_hg_model/chat_template.json", "chat_template.json: missing"),
    ],
)
def test_missing_file_is_one_line_error(tmp_path: Path, remove: str, expected: str) -> None:
    src = _copy_fixture(tmp_path)
    (src / remove).unlink()
    code, err = _run(
        ["import", str(src), "--modality", str(FIXTURE / "modality.yaml"), "--out", str(tmp_path / "o")]
    )
    assert code == 2 and expected in err and err.count("\n") == 1


def test_missing_processor_file_in_imported_checkpoint_is_one_line_error(
    imported: Path, tmp_path: Path
) -> None:
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(imported, broken)
    (broken / "processor" / "chat_template.json").unlink()
    code, err = _run(["predict", "--checkpoint", str(broken)])
    assert code == 2 and "no chat_template.json" in err and err.count("\n") == 1


def _rewrite_weights(src: Path, edit) -> None:  # type: ignore[no-untyped-def]
    from safetensors.torch import save_file

    index = json.loads((src / "model.safetensors.index.json").read_text())
    shard = sorted(set(index["weight_map"].values()))[0]
    tensors = load_file(str(src / shard))
    edit(tensors)
    save_file(tensors, str(src / shard), metadata={"format": "pt"})
    index["weight_map"] = {k: v for k, v in index["weight_map"].items() if v != shard}
    index["weight_map"].update(dict.fromkeys(tensors, shard))
    (src / "model.safetensors.index.json").write_text(json.dumps(index))


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            lambda t: t.update({"action_head.extra.weight": torch.zeros(1)}),
            "'action_head.extra.weight' has no place",
        ),
        (lambda t: t.pop(sorted(t)[0]), "is not in the checkpoint"),
        (lambda t: t.update({k: torch.zeros(3) for k in sorted(t)[:1]}), "has shape (3,), the model expects"),
    ],
    ids=["unexpected", "missing", "shape"],
)
def test_strict_mapping_names_the_first_mismatch(tmp_path: Path, edit, expected: str) -> None:  # type: ignore[no-untyped-def]
    src = _copy_fixture(tmp_path)
    _rewrite_weights(src, edit)
    code, err = _run(
        ["import", str(src), "--modality", str(FIXTURE / "modality.yaml"), "--out", str(tmp_path / "o")]
    )
    assert code == 2 and expected in err and err.count("\n") == 1


def test_unmapped_modality_key_is_refused(tmp_path: Path) -> None:
    text = (FIXTURE / "modality.yaml").read_text().replace("  state.claw: claw\n", "")
    (tmp_path / "m.yaml").write_text(text)
    code, err = _run(
        [
            "import",
            str(FIXTURE / "checkpoint"),
            "--modality",
            str(tmp_path / "m.yaml"),
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert code == 2 and "state.claw" in err and "not mapped" in err


def test_an_imported_checkpoint_fine_tunes_with_groots_flags(
    imported: Path, bags: Path, tmp_path: Path
) -> None:
    """Issue 17, item 6: `vla-policy train --init-from` an import trains the projector and the DiT with
    the LLM and vision frozen (GR00T's fine-tuning defaults), and the result loads and predicts."""
    from vla_policy.training.trainer import TrainConfig, train

    out = tmp_path / "ft"
    cfg = TrainConfig(steps=2, batch_size=2, warmup_steps=1, val_fraction=0.0, workers=0, progress=False)
    aloha = Path(__file__).resolve().parents[2] / "vla_sim" / "config" / "aloha.yaml"  # 6 + 6 + 2 joints
    train(bags, out, cfg, checkpoint=imported, params=aloha)
    before = load_file(str(imported / "model.safetensors"))
    after = load_file(str(out / "model.safetensors"))
    frozen = [k for k in before if k.startswith("backbone.eagle_model.")]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)
    assert not torch.equal(
        before["action_head.model.proj_out_2.weight"], after["action_head.model.proj_out_2.weight"]
    )
    tuned = VLAPolicy.from_checkpoint(out)  # its statistics are the new data's: 14 joints
    obs = _observation(load_file(str(FIXTURE / "reference.safetensors")))
    chunk = tuned.predict_chunk(replace(obs, state=obs.state[:14]), seed=0)
    assert chunk.actions.shape[1] == 32 and np.all(np.isfinite(chunk.actions))
