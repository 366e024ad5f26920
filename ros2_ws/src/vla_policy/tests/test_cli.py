from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from vla_policy.cli import build_parser, main
from vla_policy.config_cli import parse
from vla_policy.evaluation.offline_eval import EvalCommand, EvalConfig, eval_command_defaults
from vla_policy.training.trainer import TrainCommand, TrainConfig


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_describe_tiny_json_has_config_and_counts(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = _run(capsys, "describe", "--preset", "tiny", "--json")
    data = json.loads(out)
    assert rc == 0 and data["config"]["name"] == "tiny"
    assert data["parameters"]["total"] > 0 and "action_head.model" in data["parameters"]


def test_unknown_preset_is_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = _run(capsys, "describe", "--preset", "tinny")
    assert rc == 2 and out == ""
    assert err.strip().count("\n") == 0 and "did you mean 'tiny'" in err


def test_missing_checkpoint_is_one_line_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    rc, _, err = _run(capsys, "predict", "--checkpoint", str(tmp_path / "nope"))
    assert rc == 2 and "not found" in err and "Traceback" not in err


def test_init_then_predict_json(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert _run(capsys, "init", "--preset", "tiny", "--out", str(tmp_path / "ck"), "--seed", "1")[0] == 0
    rc, out, _ = _run(capsys, "predict", "--checkpoint", str(tmp_path / "ck"), "--json")
    data = json.loads(out)
    # tiny has the reference decoder: all 32 padded dims, the groups at its action layout
    assert rc == 0 and data["shape"] == [16, 32] and set(data["groups"]) == {"left_arm", "right_arm", "claw"}
    assert data["policy"].startswith("tiny@") and "expert" in data["timings_ms"]


def test_init_refuses_non_empty_dir(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "x").write_text("keep")
    rc, _, err = _run(capsys, "init", "--preset", "tiny", "--out", str(tmp_path))
    assert rc == 2 and "not empty" in err


def test_bench_reports_stages_and_cache_ratio(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = _run(capsys, "bench", "--preset", "tiny", "--reps", "2", "--warmup", "1", "--json")
    data = json.loads(out)
    assert rc == 0
    assert {"vision", "llm", "vl_self_attention", "dit_step_0", "dit_step_3", "decode"} <= set(data["stages"])
    assert data["stages"]["vision"]["reps"] == 2 and data["kv_cache"]["speedup"] > 0


def test_subcommands_registered_through_adders() -> None:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert {"describe", "init", "predict", "bench"} <= set(sub.choices)


# ---- train and eval: the flags are the config dataclasses' fields (config_cli, tyro) ---------------------
ALOHA_PARAMS = Path(__file__).resolve().parents[2] / "vla_sim" / "config" / "aloha.yaml"
EVAL_IO = ["--bag", "b", "--checkpoint", "c", "--out", "o"]


def _help(capsys: pytest.CaptureFixture[str], command: str) -> str:
    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0
    return capsys.readouterr().out


def test_every_train_config_field_is_a_flag_with_its_default(capsys: pytest.CaptureFixture[str]) -> None:
    text = _help(capsys, "train")
    for f in dataclasses.fields(TrainConfig):
        assert f"--{f.name.replace('_', '-')}" in text, f.name
    cmd = parse(TrainCommand, ["--data", "d", "--out", "o", "--preset", "tiny"], "vla-policy train")
    assert cmd.config == TrainConfig() and cmd.preset == "tiny" and cmd.checkpoint is None


def test_train_flags_build_the_config() -> None:
    argv = ["--data", "d", "--out", "o", "--checkpoint", "ck", "--batch-size", "4", "--no-augment"]
    argv += ["--lora-targets", "llm,dit", "--tune-visual", "--no-tune-llm", "--betas", "0.9", "0.99"]
    cmd = parse(TrainCommand, argv, "vla-policy train")
    cfg = cmd.config
    assert cmd.checkpoint == "ck"  # --checkpoint is --init-from's alias
    assert (cfg.batch_size, cfg.augment, cfg.betas) == (4, False, (0.9, 0.99))
    assert cfg.lora_targets == ("llm", "dit") and (cfg.tune_visual, cfg.tune_llm, cfg.tune_projector) == (
        True,
        False,
        None,  # unset: decided by --preset / --init-from
    )
    spaced = parse(TrainCommand, ["--data", "d", "--out", "o", "--lora-targets", "dit", "llm"], "x")
    assert spaced.config.lora_targets == ("dit", "llm")


@pytest.mark.parametrize(
    "argv, needles",
    [
        (["--batch-sise", "4"], ["unknown flag '--batch-sise'", "did you mean '--batch-size'"]),
        (["--steps", "abc"], ["--steps", "INT"]),
        (["--steps", "0"], ["steps must be >= 1"]),
        (["--log-every", "0"], ["log every must be >= 1"]),
        (["--preset", "tiny", "--init-from", "ck"], ["--preset and --init-from cannot be given together"]),
        (["--betas", "0.9"], ["--betas expects FLOAT FLOAT"]),
    ],
)
def test_bad_train_flags_are_one_line_errors(
    capsys: pytest.CaptureFixture[str], argv: list[str], needles: list[str]
) -> None:
    rc, out, err = _run(capsys, "train", "--data", "d", "--out", "o", *argv)
    assert rc == 2 and out == "" and err.count("\n") == 1 and err.startswith("vla-policy train: error: ")
    assert all(n in err for n in needles), err


def test_missing_required_flag_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = _run(capsys, "eval", "--bag", "b", "--checkpoint", "c")
    assert rc == 2 and err == "vla-policy eval: error: missing required --out\n"


def test_eval_defaults_are_the_node_parameter_schema(capsys: pytest.CaptureFixture[str]) -> None:
    from vla_policy.runtime.settings import load_schema

    text = _help(capsys, "eval")
    node = load_schema().defaults()
    cmd = parse(EvalCommand, EVAL_IO, "vla-policy eval", eval_command_defaults(EVAL_IO))
    assert cmd.config == EvalConfig()
    for name in ("blending", "control_rate_hz", "max_state_age", "max_camera_skew", "refill_threshold"):
        assert getattr(cmd.config, name) == node[name], name
        assert load_schema().specs[name].description.split(";")[0] in " ".join(text.split()), name


def test_eval_params_file_sets_the_defaults_and_flags_override_it() -> None:
    argv = [*EVAL_IO, "--params", str(ALOHA_PARAMS)]
    from_file = parse(EvalCommand, argv, "vla-policy eval", eval_command_defaults(argv)).config
    assert from_file.control_rate_hz == 50.0 and from_file.joints is not None  # aloha.yaml's
    argv += ["--control-rate", "25", "--max-state-age", "0.5"]
    given = parse(EvalCommand, argv, "vla-policy eval", eval_command_defaults(argv)).config
    assert (given.control_rate_hz, given.max_state_age) == (25.0, 0.5)
    assert given.joints == from_file.joints and given.camera_topics == from_file.camera_topics


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--blending", "bogus"], "blending must be one of none, temporal_ensemble, rtc, got 'bogus'"),
        (["--control-rate", "900"], "control_rate_hz must be in [0.0, 500.0]"),
        (["--seed", "-1"], "seed must be >= 0"),
        (["--params", "/nonexistent/params.yaml"], "/nonexistent/params.yaml"),
    ],
)
def test_bad_eval_values_are_one_line_errors(
    capsys: pytest.CaptureFixture[str], argv: list[str], needle: str
) -> None:
    rc, _, err = _run(capsys, "eval", *EVAL_IO, *argv)
    assert rc == 2 and err.count("\n") == 1 and needle in err, err
