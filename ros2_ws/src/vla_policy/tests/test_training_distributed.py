"""``vla-policy train`` under ``torchrun``: 2 CPU ranks (gloo) against one process, resume across world sizes.

The reference is one process with the doubled batch (4 windows per step, the 2-rank runs' 2 per rank x 2
ranks). Each window's augmentation, flow-matching noise and time are keyed by its place in the step's
global batch, not by the rank that carries it (``training/sampler.py``); dropout is drawn per micro-batch,
so these runs start from a tiny checkpoint with dropout 0 (with dropout, equal micro-batch sizes are
needed: ``test_micro_batches_do_not_depend_on_how_ranks_split_them`` checks the batches for that case).
The loss curves must then agree up to the order in which gradients are summed. Stated tolerance:
relative 1e-4 on every logged loss, validation loss and gradient norm.

Three ``torchrun --nproc-per-node 2`` launches through the real CLI, each a few steps of the tiny model on
two small synthetic episodes, one thread per rank, no loading workers:

- DDP, steps 1-3, ``--check-replicas``; then one process resumes it to step 6 (2 -> 1);
- FSDP2 resumes a one-process run from step 3 to step 6 (1 -> 2), ``--check-replicas``;
- DDP with LoRA and the vision encoder trained (tune flags) against the same on one process.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from vla_policy.cli import main as cli_main
from vla_policy.data.episode_dataset import (
    AugmentConfig,
    WindowDataset,
    dataset_config_for,
    find_bags,
    load_episodes,
)
from vla_policy.evaluation.offline_eval import EvalConfig
from vla_policy.model.policy import VLAPolicy
from vla_policy.model.presets import get_preset
from vla_policy.strict_config import replace
from vla_policy.training.sampler import BatchPlan, BatchPlanError, MicroBatches, resolve_accumulation
from vla_policy.training.trainer import (
    GROOT_FINETUNE_FLAGS,
    STATE_FILE,
    TrainConfig,
    TrainError,
    apply_tune_flags,
    train,
)

STEPS = 6
RTOL = 1e-4
BASE = dict(
    steps=STEPS,
    batch_size=4,
    lr=1e-3,
    warmup_steps=2,
    val_fraction=0.5,
    val_every=3,
    grad_clip=0.1,  # below every step's gradient norm: clipping acts on every step
    workers=0,
    progress=False,
)
CLI_BASE = [
    "--steps", str(STEPS), "--batch-size", "2", "--lr", "1e-3", "--warmup-steps", "2",
    "--val-fraction", "0.5", "--val-every", "3", "--grad-clip", "0.1", "--workers", "0", "--no-progress",
    "--check-replicas",
]  # fmt: skip
LORA = ["--lora-rank", "4", "--tune-visual", "--steps", "3", "--lr", "1e-3", "--warmup-steps", "1",
        "--val-fraction", "0.5", "--grad-clip", "0.1", "--workers", "0", "--no-progress"]  # fmt: skip


def _rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _curve(rows: list[dict], steps: range) -> dict[tuple[int, str], float]:
    keys = ("loss", "val_loss", "grad_norm")
    return {(r["step"], k): r[k] for r in rows if r["step"] in steps for k in keys if k in r}


def _assert_same_curve(got: list[dict], ref: list[dict], steps: range) -> None:
    a, b = _curve(got, steps), _curve(ref, steps)
    assert a and a.keys() == b.keys(), (sorted(a), sorted(b))
    for key in a:
        assert a[key] == pytest.approx(b[key], rel=RTOL), (key, a[key], b[key])


def _assert_replicas_agree(out: Path, steps: list[int]) -> None:
    rows = [r for r in _rows(out) if "loss" in r and r["step"] in steps]
    digests = [r["replica_digests"] for r in rows]
    assert [r["step"] for r in rows] == steps
    assert all(len(d) == 2 and d[0] == d[1] for d in digests), digests
    assert len({d[0] for d in digests}) == len(steps), "the weights did not change from step to step"


def _torchrun(*args: str) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run(
        [*cmd, "-m", "vla_policy.cli", "train", *args], capture_output=True, text=True, timeout=900, env=env
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]


@pytest.fixture(scope="module")
def single_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # as each torchrun rank
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("dist")


@pytest.fixture(scope="module")
def start(runs) -> Path:
    """A tiny checkpoint without dropout (dropout masks are drawn per micro-batch)."""
    cfg = get_preset("tiny")
    VLAPolicy(replace(cfg, action_head=replace(cfg.action_head, dropout=0.0)), seed=0).save(runs / "start")
    return runs / "start"


@pytest.fixture(scope="module")
def reference(bags, runs, start, single_thread) -> Path:
    """One process, the doubled batch (4)."""
    train(bags, runs / "one", TrainConfig(**BASE), checkpoint=start)
    return runs / "one"


@pytest.fixture(scope="module")
def ddp_half(bags, runs, start) -> Path:
    """2 ranks x 2 windows, DDP, steps 1-3."""
    out = runs / "ddp"
    _torchrun("--data", str(bags), "--init-from", str(start), "--out", str(out), "--stop-at", "3", *CLI_BASE)
    return out


# --- 2 ranks ------------------------------------------------------------------------------------------
def test_ddp_ranks_hold_identical_weights_after_every_step(ddp_half):
    _assert_replicas_agree(ddp_half, [1, 2, 3])
    state = json.loads((ddp_half / STATE_FILE).read_text())
    assert state["batch"] == {"per_rank": 2, "world_size": 2, "grad_accum": 1, "effective": 4}
    assert state["strategy"] == "ddp" and state["precision"] == "fp32"


def test_ddp_follows_the_one_process_loss_curve(ddp_half, reference):
    _assert_same_curve(_rows(ddp_half), _rows(reference), range(1, 4))
    # the clipped norm is the global one: clipping acted at every step, alike on both sides
    assert all(r["grad_norm"] > 0.1 for r in _rows(reference) if "grad_norm" in r)


def test_two_rank_run_resumes_on_one_process(bags, ddp_half, reference, tmp_path, single_thread):
    out = tmp_path / "two_to_one"
    shutil.copytree(ddp_half, out)
    res = train(bags, out, TrainConfig(**BASE), resume=True)  # 4 windows per rank now
    plan = (res.summary["world_size"], res.summary["grad_accum"], res.summary["effective_batch_size"])
    assert plan == (1, 1, 4)
    _assert_same_curve(_rows(out), _rows(reference), range(1, STEPS + 1))


def test_one_process_run_resumes_on_two_fsdp_ranks(bags, runs, start, reference, single_thread):
    out = runs / "one_to_two"
    train(bags, out, TrainConfig(**BASE), checkpoint=start, stop_at=3)
    _torchrun("--data", str(bags), "--out", str(out), "--resume", "--strategy", "fsdp", *CLI_BASE)
    _assert_replicas_agree(out, [4, 5, 6])
    _assert_same_curve(_rows(out), _rows(reference), range(1, STEPS + 1))
    # the sharded run saved whole tensors: the final weights are the one-process run's
    wa, wb = load_file(str(out / "model.safetensors")), load_file(str(reference / "model.safetensors"))
    assert wa.keys() == wb.keys()
    assert all(torch.allclose(wa[k], wb[k], rtol=RTOL, atol=1e-6) for k in wa)
    state = json.loads((out / STATE_FILE).read_text())
    assert state["strategy"] == "fsdp" and state["batch"]["per_rank"] == 2


def test_tune_flags_and_lora_under_ddp(bags, runs, start, single_thread):
    out1, out2 = runs / "lora_one", runs / "lora_ddp"
    assert cli_main(["train", "--data", str(bags), "--init-from", str(start), "--out", str(out1),
                     "--batch-size", "4", *LORA]) == 0  # fmt: skip
    _torchrun("--data", str(bags), "--init-from", str(start), "--out", str(out2), "--batch-size", "2",
              "--check-replicas", *LORA)  # fmt: skip
    _assert_replicas_agree(out2, [1, 2, 3])
    _assert_same_curve(_rows(out2), _rows(out1), range(1, 4))
    state = json.loads((out2 / STATE_FILE).read_text())
    assert state["tune_flags"] == {**GROOT_FINETUNE_FLAGS, "tune_visual": True}
    trained = state["trainable"]
    assert any(n.startswith("backbone.eagle_model.vision_model.") for n in trained)
    llm = [n for n in trained if n.startswith("backbone.eagle_model.language_model.")]
    assert llm and all(n.endswith(("lora_a", "lora_b")) for n in llm), "the LLM trains only through LoRA"


# --- one process: what makes the runs world-size independent ------------------------------------------
def test_micro_batches_do_not_depend_on_how_ranks_split_them(bags):
    policy = VLAPolicy(get_preset("tiny"), seed=0)
    windows = WindowDataset(load_episodes(find_bags(bags), _dcfg(policy)))

    def step_batches(plan: BatchPlan, rank: int) -> list[tuple]:
        ds = MicroBatches(policy, windows, plan, rank, 0, AugmentConfig(), 5, 7)
        return [ds[k] for k in range(len(ds))]

    # 2 ranks x 2 windows and 1 rank x 2 accumulated micro-batches of 2: the same micro-batches
    two_ranks = sorted(
        step_batches(BatchPlan(2, 2, 1), 0) + step_batches(BatchPlan(2, 2, 1), 1), key=lambda x: x[:2]
    )
    accumulated = step_batches(BatchPlan(2, 1, 2), 0)
    assert [x[:2] for x in two_ranks] == [x[:2] for x in accumulated] == [(5, 0), (5, 1), (6, 0), (6, 1)]
    for (_, _, a, _), (_, _, b, _) in zip(two_ranks, accumulated, strict=True):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # and one rank x 4: the same windows, augmentation, noise and time, in the same order
    whole = step_batches(BatchPlan(4), 0)
    for s in (5, 6):
        halves = [b for step, _, b, _ in accumulated if step == s]
        one = next(b for step, _, b, _ in whole if step == s)
        assert {"noise", "t", "pixel_values", "state", "action"} <= one.keys()
        for k in ("noise", "t", "pixel_values", "state", "action", "action_mask", "input_ids"):
            assert torch.equal(torch.cat([h[k] for h in halves]), one[k]), k
    assert not torch.equal(whole[0][2]["noise"], whole[1][2]["noise"])


def _dcfg(policy):
    return dataset_config_for(policy.config, EvalConfig(progress=False, plots=False))


def test_accumulation_keeps_a_resumed_runs_effective_batch():
    assert resolve_accumulation(2, 1, 0, None) == 1
    assert resolve_accumulation(2, 1, 0, 4) == 2  # 2 ranks -> 1
    assert resolve_accumulation(2, 2, 0, 4) == 1  # 1 rank x 2 -> 2 ranks
    assert resolve_accumulation(1, 2, 0, 4) == 2
    with pytest.raises(BatchPlanError, match="not a multiple"):
        resolve_accumulation(3, 1, 0, 4)
    with pytest.raises(BatchPlanError, match="effective batch is 4"):
        resolve_accumulation(2, 1, 1, 4)


def test_init_from_defaults_to_groot_fine_tuning_flags():
    aloha = VLAPolicy(get_preset("tiny-aloha"), seed=0)  # trained from scratch: everything on
    assert aloha.config.backbone.tune_visual and aloha.config.backbone.tune_llm
    assert apply_tune_flags(aloha, TrainConfig(), fine_tune=True, resumed=False) == GROOT_FINETUNE_FLAGS
    assert not any(p.requires_grad for p in aloha.model.backbone.eagle_model.parameters())
    assert all(p.requires_grad for p in aloha.model.action_head.model.parameters())
    scratch = VLAPolicy(get_preset("tiny-aloha"), seed=0)
    flags = apply_tune_flags(scratch, TrainConfig(tune_llm=False), fine_tune=False, resumed=False)
    assert flags == {**GROOT_FINETUNE_FLAGS, "tune_visual": True}  # the preset's, then the explicit one
    with pytest.raises(TrainError, match="--resume"):
        apply_tune_flags(scratch, TrainConfig(tune_llm=True), fine_tune=False, resumed=True)


def test_init_from_trains_only_what_the_flags_say(bags, tmp_path, single_thread):
    src = tmp_path / "aloha"
    VLAPolicy(get_preset("tiny-aloha"), seed=0).save(src)
    out = tmp_path / "ft"
    train(bags, out, TrainConfig(**{**BASE, "steps": 2}), checkpoint=src)
    before, after = load_file(str(src / "model.safetensors")), load_file(str(out / "model.safetensors"))
    frozen = [k for k in before if k.startswith("backbone.eagle_model.")]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)
    assert not torch.equal(
        before["action_head.model.proj_out_2.weight"], after["action_head.model.proj_out_2.weight"]
    )
    saved = json.loads((out / "config.json").read_text())["model"]
    assert not saved["backbone"]["tune_visual"] and saved["action_head"]["tune_diffusion_model"]


def test_keep_statistics_keeps_the_checkpoint_normalisation(bags, tmp_path, single_thread):
    """A fine-tuning round (DAgger) keeps the normalisation its checkpoint was trained with."""
    src = tmp_path / "aloha"
    VLAPolicy(get_preset("tiny-aloha"), seed=0).save(src)
    cfg = {**BASE, "steps": 1, "val_fraction": 0.0}
    train(bags, tmp_path / "kept", TrainConfig(**cfg, keep_statistics=True), checkpoint=src)
    train(bags, tmp_path / "new", TrainConfig(**cfg), checkpoint=src)
    stats = {name: json.loads((tmp_path / name / "statistics.json").read_text()) for name in ("kept", "new")}
    assert stats["kept"] == json.loads((src / "statistics.json").read_text())
    assert stats["new"] != stats["kept"]


def test_loading_workers_build_the_same_batches_as_the_trainer(bags, tmp_path, single_thread):
    cfg = {**BASE, "steps": 3, "val_fraction": 0.0}
    train(bags, tmp_path / "inline", TrainConfig(**cfg), preset="tiny")
    res = train(bags, tmp_path / "workers", TrainConfig(**{**cfg, "workers": 2}), preset="tiny")
    assert res.summary["loading_workers"] == 2 and res.summary["loading_samples_per_s_per_worker"] > 0
    assert [r["loss"] for r in _rows(tmp_path / "inline")] == [r["loss"] for r in _rows(tmp_path / "workers")]


def test_bf16_autocast_runs_on_the_cpu_when_asked(bags, tmp_path, single_thread):
    cfg = {**BASE, "steps": 2, "val_fraction": 0.0}
    fp32 = train(bags, tmp_path / "fp32", TrainConfig(**cfg), preset="tiny")
    bf16 = train(bags, tmp_path / "bf16", TrainConfig(**cfg, precision="bf16"), preset="tiny")
    assert (fp32.summary["precision"], bf16.summary["precision"]) == ("fp32", "bf16")  # auto: fp32 on CPU
    assert np.isfinite(bf16.last_loss) and bf16.first_loss != fp32.first_loss
    assert bf16.first_loss == pytest.approx(fp32.first_loss, rel=0.05)
    weights = load_file(str(tmp_path / "bf16" / "model.safetensors"))
    assert all(w.dtype == torch.float32 for w in weights.values())  # fp32 master weights


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--grad-accum", "-1"], "accumulation"),
        (["--batch-size", "0"], "batch size"),
        pytest.param(
            ["--device", "cuda"],
            "no CUDA",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present"),
        ),
    ],
)
def test_bad_distributed_settings_exit_with_one_line(bags, tmp_path, capsys, argv, needle):
    rc = cli_main(["train", "--data", str(bags), "--preset", "tiny", "--out", str(tmp_path / "o"), *argv])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and needle in err and "Traceback" not in err


def test_resume_with_a_batch_that_cannot_keep_the_effective_batch_is_refused(bags, tmp_path, capsys):
    out = tmp_path / "run"
    train(bags, out, TrainConfig(**{**BASE, "steps": 2, "batch_size": 2, "val_fraction": 0.0}), preset="tiny",
          stop_at=1)  # fmt: skip
    rc = cli_main(["train", "--data", str(bags), "--out", str(out), "--resume", "--steps", "2",
                   "--batch-size", "3", "--val-fraction", "0"])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "effective batch 2" in err


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_trains_in_bf16_with_pinned_batches(bags, tmp_path):
    res = train(bags, tmp_path / "gpu", TrainConfig(**{**BASE, "steps": 2, "workers": 1}, device="cuda"),
                preset="tiny")  # fmt: skip
    assert res.summary["precision"] == ("bf16" if torch.cuda.is_bf16_supported() else "fp32")
    assert np.isfinite(res.last_loss)
