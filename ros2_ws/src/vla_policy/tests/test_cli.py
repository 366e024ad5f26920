from __future__ import annotations

import json
from pathlib import Path

import pytest
from vla_policy.cli import build_parser, main


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
