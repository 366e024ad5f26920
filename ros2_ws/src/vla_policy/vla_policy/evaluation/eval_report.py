"""Scoring and report writing shared by offline evaluation and real-time replay evaluation.

Input: a time series sampled at the control ticks: predicted joint commands [N, J] (NaN = nothing
commanded at that tick: holding), the recorded ground-truth commands [N, J] (NaN = none yet), and the id
of the chunk that produced each prediction. Output: a JSON-able dict (``score_series``) and the files
``report.json``, ``report.md``, ``report_timing.json`` and PNG plots (``write_report``).

``report.json`` holds only deterministic figures (simulated time); measured wall-clock figures go to
``report_timing.json``.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vla_policy.runtime.joint_groups import GROUP_NAMES, JointGroups

logger = logging.getLogger(__name__)

REPORT_VERSION = 1
SIG_DIGITS = 9


def _r(x: float) -> float | None:
    """Round to SIG_DIGITS significant digits (None for NaN/inf: JSON has no NaN)."""
    x = float(x)
    if not math.isfinite(x):
        return None
    if x == 0:
        return 0.0
    return float(f"{x:.{SIG_DIGITS}g}")


def clean(obj: Any) -> Any:
    """JSON-safe copy: floats rounded, NaN -> None, numpy scalars/arrays -> Python."""
    if isinstance(obj, Mapping):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [clean(v) for v in obj.tolist()]
    if isinstance(obj, bool | np.bool_):
        return bool(obj)
    if isinstance(obj, int | np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        return _r(float(obj))
    return obj


def _err_stats(err: np.ndarray) -> dict[str, float]:
    """MAE / RMSE / max |err| over all finite entries of ``err``."""
    e = err[np.isfinite(err)]
    if e.size == 0:
        return {"mae": float("nan"), "rmse": float("nan"), "max_abs": float("nan"), "n": 0}
    return {
        "mae": float(np.mean(np.abs(e))),
        "rmse": float(np.sqrt(np.mean(e**2))),
        "max_abs": float(np.max(np.abs(e))),
        "n": int(e.size),
    }


def _group_slices(joints: JointGroups) -> dict[str, slice]:
    out: dict[str, slice] = {}
    start = 0
    for g in GROUP_NAMES:
        n = len(joints.group(g))
        if n:
            out[g] = slice(start, start + n)
        start += n
    return out


def _runs(valid: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) index ranges of consecutive True values."""
    runs: list[tuple[int, int]] = []
    start = None
    for i, v in enumerate(valid):
        if v and start is None:
            start = i
        elif not v and start is not None:
            runs.append((start, i))
            start = None
    if start is not None:
        runs.append((start, len(valid)))
    return runs


def jerk(series: np.ndarray, period: float) -> np.ndarray:
    """Third finite difference / period^3 over runs of finite rows; [M, J] (rows of all runs stacked)."""
    valid = np.all(np.isfinite(series), axis=1)
    parts = [np.diff(series[a:b], n=3, axis=0) / period**3 for a, b in _runs(valid) if b - a >= 4]
    if not parts:
        return np.zeros((0, series.shape[1]))
    return np.concatenate(parts)


def score_series(
    times: np.ndarray,
    predicted: np.ndarray,
    recorded: np.ndarray,
    chunk_ids: np.ndarray,
    joints: JointGroups,
    period: float,
    normalize: Callable[[np.ndarray], np.ndarray] | None = None,
) -> dict[str, Any]:
    """Scores of predicted vs recorded joint commands [N, J] (state-vector order) at the control ticks."""
    pred = np.asarray(predicted, dtype=np.float64)
    gt = np.asarray(recorded, dtype=np.float64)
    ids = np.asarray(chunk_ids, dtype=np.int64)
    names = joints.joint_names
    both = np.all(np.isfinite(pred), axis=1) & np.all(np.isfinite(gt), axis=1)
    err = np.where(both[:, None], pred - gt, np.nan)
    slices = _group_slices(joints)

    per_joint = {n: _err_stats(err[:, j]) for j, n in enumerate(names)}
    per_group = {g: _err_stats(err[:, sl]) for g, sl in slices.items()}
    overall = _err_stats(err)

    normalized: dict[str, Any] = {}
    if normalize is not None and both.any():
        pn = np.full_like(pred, np.nan)
        gn = np.full_like(gt, np.nan)
        pn[both] = normalize(pred[both])
        gn[both] = normalize(gt[both])
        nerr = np.where(both[:, None], pn - gn, np.nan)
        normalized = {
            "overall": _err_stats(nerr),
            "per_group": {g: _err_stats(nerr[:, sl]) for g, sl in slices.items()},
            "per_joint": {n: _err_stats(nerr[:, j]) for j, n in enumerate(names)},
        }

    # chunk boundaries: consecutive predicted ticks whose chunk id changes
    valid_pred = np.all(np.isfinite(pred), axis=1)
    steps = np.abs(np.diff(pred, axis=0))  # [N-1, J]
    step_ok = valid_pred[1:] & valid_pred[:-1]
    boundary = step_ok & (ids[1:] != ids[:-1]) & (ids[1:] > 0) & (ids[:-1] > 0)
    inner = step_ok & (ids[1:] == ids[:-1])
    gt_steps = np.abs(np.diff(gt, axis=0))
    gt_ok = np.all(np.isfinite(gt_steps), axis=1)

    def step_stats(mask: np.ndarray, arr: np.ndarray) -> dict[str, float]:
        if not mask.any():
            return {
                "count": 0,
                "mean_max_abs": float("nan"),
                "max_abs": float("nan"),
                "mean_l2": float("nan"),
            }
        s = arr[mask]
        return {
            "count": int(mask.sum()),
            "mean_max_abs": float(np.mean(np.max(s, axis=1))),
            "max_abs": float(np.max(s)),
            "mean_l2": float(np.mean(np.linalg.norm(s, axis=1))),
        }

    b = step_stats(boundary, steps)
    i = step_stats(inner, steps)
    ratio = (b["mean_l2"] / i["mean_l2"]) if b["count"] and i["count"] and i["mean_l2"] > 0 else float("nan")
    discontinuity = {
        "boundaries": b,
        "within_chunk": i,
        "recorded": step_stats(gt_ok, gt_steps),
        "boundary_to_within_l2_ratio": ratio,
        "per_group_mean_boundary_jump": {
            g: (float(np.mean(np.max(steps[boundary][:, sl], axis=1))) if boundary.any() else float("nan"))
            for g, sl in slices.items()
        },
    }

    jp = jerk(pred, period)
    jg = jerk(gt, period)

    def jerk_stats(j: np.ndarray) -> dict[str, Any]:
        if j.size == 0:
            return {"mean_abs": float("nan"), "rms": float("nan"), "per_group_mean_abs": {}}
        return {
            "mean_abs": float(np.mean(np.abs(j))),
            "rms": float(np.sqrt(np.mean(j**2))),
            "per_group_mean_abs": {g: float(np.mean(np.abs(j[:, sl]))) for g, sl in slices.items()},
        }

    return {
        "ticks": len(times),
        "scored_ticks": int(both.sum()),
        "held_ticks": int((~valid_pred).sum()),
        "coverage": float(both.sum() / max(1, np.all(np.isfinite(gt), axis=1).sum())),
        "chunks_seen": len({int(x) for x in ids[valid_pred] if x > 0}),
        "error": {"overall": overall, "per_group": per_group, "per_joint": per_joint},
        "error_normalized": normalized,
        "discontinuity": discontinuity,
        "jerk": {"predicted": jerk_stats(jp), "recorded": jerk_stats(jg)},
    }


def latency_summary(samples: Sequence[float]) -> dict[str, float]:
    a = np.asarray(list(samples), dtype=np.float64)
    if a.size == 0:
        return {"count": 0}
    return {
        "count": int(a.size),
        "mean_s": float(a.mean()),
        "p50_s": float(np.percentile(a, 50)),
        "p90_s": float(np.percentile(a, 90)),
        "p99_s": float(np.percentile(a, 99)),
        "max_s": float(a.max()),
        "min_s": float(a.min()),
    }


# --- files ----------------------------------------------------------------------------------------------
def _fmt(x: Any, digits: int = 4) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, float):
        return f"{x:.{digits}g}"
    return str(x)


def summary_rows(report: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(metric, value) rows of the headline figures (for the CLI table and report.md)."""
    s = report["scores"]
    rows = [
        ("policy", str(report.get("policy", ""))),
        ("episode", f"{report.get('episode', {}).get('task', '')} ({report.get('bag', '')})"),
        ("ticks scored", f"{s['scored_ticks']} / {s['ticks']} (held {s['held_ticks']})"),
        ("chunks", str(s["chunks_seen"])),
        ("MAE all joints", _fmt(s["error"]["overall"]["mae"])),
        ("RMSE all joints", _fmt(s["error"]["overall"]["rmse"])),
    ]
    for g, st in s["error"]["per_group"].items():
        rows.append((f"MAE / RMSE {g}", f"{_fmt(st['mae'])} / {_fmt(st['rmse'])}"))
    if s.get("error_normalized"):
        rows.append(("MAE normalised", _fmt(s["error_normalized"]["overall"]["mae"])))
    d = s["discontinuity"]
    rows.append(("boundary jump (mean max |da|)", _fmt(d["boundaries"]["mean_max_abs"])))
    rows.append(("within-chunk step (mean max |da|)", _fmt(d["within_chunk"]["mean_max_abs"])))
    rows.append(
        (
            "jerk mean |j| pred / rec",
            f"{_fmt(s['jerk']['predicted']['mean_abs'])} / {_fmt(s['jerk']['recorded']['mean_abs'])}",
        )
    )
    lat = report.get("latency", {})
    if lat:
        rows.append(("latency (report.json)", f"{lat.get('mode')}: {_fmt(lat.get('p50_s'))} s p50"))
    return rows


def summary_table(report: Mapping[str, Any], timing: Mapping[str, Any] | None = None) -> str:
    rows = summary_rows(report)
    if timing and timing.get("inference_wall", {}).get("count"):
        w = timing["inference_wall"]
        rows.append(
            (
                "measured inference (wall)",
                f"p50 {w['p50_s'] * 1e3:.1f} ms, p99 {w['p99_s'] * 1e3:.1f} ms, "
                f"max {w['max_s'] * 1e3:.1f} ms (n={w['count']})",
            )
        )
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


def _markdown(report: Mapping[str, Any], timing: Mapping[str, Any] | None, plots: Sequence[str]) -> str:
    s = report["scores"]
    lines = [f"# Evaluation report ({report.get('mode', '')})", ""]
    lines += ["| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in summary_rows(report)]
    lines += ["", "## Error per group (raw units)", "", "| group | MAE | RMSE | max |", "|---|---|---|---|"]
    for g, st in s["error"]["per_group"].items():
        lines.append(f"| {g} | {_fmt(st['mae'])} | {_fmt(st['rmse'])} | {_fmt(st['max_abs'])} |")
    lines += ["", "## Error per joint", "", "| joint | MAE | RMSE | MAE normalised |", "|---|---|---|---|"]
    norm = s.get("error_normalized", {}).get("per_joint", {})
    for j, st in s["error"]["per_joint"].items():
        lines.append(f"| {j} | {_fmt(st['mae'])} | {_fmt(st['rmse'])} | {_fmt(norm.get(j, {}).get('mae'))} |")
    d = s["discontinuity"]
    lines += [
        "",
        "## Smoothness",
        "",
        f"- chunk boundaries: {d['boundaries']['count']}, "
        f"mean max |Δa| {_fmt(d['boundaries']['mean_max_abs'])}, "
        f"max {_fmt(d['boundaries']['max_abs'])}",
        f"- within a chunk: mean max |Δa| {_fmt(d['within_chunk']['mean_max_abs'])}; "
        f"boundary / within (L2): {_fmt(d['boundary_to_within_l2_ratio'])}",
        f"- recorded commands: mean max |Δa| {_fmt(d['recorded']['mean_max_abs'])}",
        f"- jerk mean |j|: predicted {_fmt(s['jerk']['predicted']['mean_abs'])}, "
        f"recorded {_fmt(s['jerk']['recorded']['mean_abs'])} (units/s³)",
    ]
    lat = report.get("latency", {})
    lines += ["", "## Latency", "", f"- report.json: `{json.dumps(lat)}`"]
    if timing:
        w = timing.get("inference_wall", {})
        if w.get("count"):
            lines.append(
                "- measured wall clock (report_timing.json, not deterministic): "
                f"p50 {w['p50_s'] * 1e3:.2f} ms, p90 {w['p90_s'] * 1e3:.2f} ms, "
                f"p99 {w['p99_s'] * 1e3:.2f} ms, max {w['max_s'] * 1e3:.2f} ms "
                f"over {w['count']} chunks"
            )
    if plots:
        lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots]
    return "\n".join(lines) + "\n"


def plot_series(
    out: Path, times: np.ndarray, predicted: np.ndarray, recorded: np.ndarray, joints: JointGroups
) -> list[str]:
    """predicted_vs_recorded_<group>.png, one subplot per joint; returns the file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files: list[str] = []
    t = np.asarray(times) - (times[0] if len(times) else 0.0)
    for g, sl in _group_slices(joints).items():
        names = joints.joint_names[sl]
        fig, axes = plt.subplots(
            len(names), 1, figsize=(8, 1.6 * len(names) + 0.6), sharex=True, squeeze=False
        )
        for k, name in enumerate(names):
            ax = axes[k, 0]
            ax.plot(t, recorded[:, sl][:, k], color="black", lw=1.2, label="recorded")
            ax.plot(t, predicted[:, sl][:, k], color="tab:red", lw=1.0, label="predicted")
            ax.set_ylabel(name, fontsize=7)
            ax.tick_params(labelsize=7)
        axes[0, 0].legend(fontsize=7, loc="upper right")
        axes[-1, 0].set_xlabel("time (s)")
        fig.suptitle(f"{g}: predicted vs recorded commands")
        fig.tight_layout()
        name = f"predicted_vs_recorded_{g}.png"
        fig.savefig(out / name, dpi=80)
        plt.close(fig)
        files.append(name)
    return files


def plot_latency(out: Path, wall: Sequence[float], simulated: float | None) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    data = np.asarray(list(wall), dtype=np.float64) * 1e3
    if data.size:
        ax.hist(
            data, bins=min(40, max(5, data.size // 2)), color="tab:blue", alpha=0.8, label="measured (wall)"
        )
    if simulated is not None:
        ax.axvline(simulated * 1e3, color="tab:red", ls="--", label=f"simulated {simulated * 1e3:.0f} ms")
    ax.set_xlabel("inference latency (ms)")
    ax.set_ylabel("chunks")
    ax.legend(fontsize=8)
    fig.tight_layout()
    name = "latency_histogram.png"
    fig.savefig(out / name, dpi=80)
    plt.close(fig)
    return name


REPORT_FILES = ("report.json", "report.md", "report_timing.json")


def clear_previous(out: Path) -> None:
    """Remove an earlier report from ``out`` so that a failed run leaves no report claiming success."""
    for name in REPORT_FILES:
        p = out / name
        if p.exists():
            p.unlink()


def write_report(
    out: str | Path,
    report: Mapping[str, Any],
    timing: Mapping[str, Any] | None = None,
    series: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    joints: JointGroups | None = None,
    wall_latencies: Sequence[float] = (),
    simulated_latency: float | None = None,
    plots: bool = True,
) -> dict[str, Path]:
    """Write report.json (deterministic), report_timing.json, PNG plots and report.md into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files: list[str] = []
    if plots and series is not None and joints is not None:
        files += plot_series(out, series[0], series[1], series[2], joints)
        files.append(plot_latency(out, wall_latencies, simulated_latency))
    paths = {"report_timing.json": out / "report_timing.json", "report.md": out / "report.md"}
    if timing is not None:
        paths["report_timing.json"].write_text(json.dumps(clean(timing), indent=2, sort_keys=True) + "\n")
    paths["report.md"].write_text(_markdown(report, timing, files))
    # report.json last: its presence means the run completed
    paths["report.json"] = out / "report.json"
    paths["report.json"].write_text(json.dumps(clean(report), indent=2, sort_keys=True) + "\n")
    for f in files:
        paths[f] = out / f
    return paths
