"""The reliability report: scenarios x result, with the invariant monitor's counts. Written as
``reliability.json`` and ``reliability.md`` by the short scenario set (``test_reliability.py``) and by the
soak (``scripts/soak.sh``). JSON: ``scenarios`` (name, result, detail, messages_checked, violations), the
totals ``messages_checked`` and ``violations``, plus ``kind``, ``duration_s`` and free-form ``extra``.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[4]


def report_dir() -> Path:
    """``$VLA_RELIABILITY_DIR``, or ``out/reliability/`` in the repository."""
    return Path(os.environ.get("VLA_RELIABILITY_DIR") or REPO_ROOT / "out" / "reliability")


@dataclass
class ScenarioResult:
    name: str
    result: str  # pass | fail
    detail: str
    messages_checked: int = 0
    violations: int = 0
    duration_s: float = 0.0


@dataclass
class ReliabilityReport:
    kind: str = "short"
    scenarios: list[ScenarioResult] = field(default_factory=list)
    messages_checked: int = 0
    violations: int = 0
    violation_examples: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    def add_monitor(self, monitor: Any) -> None:
        """Add a monitor's totals (every message it checked, scenario or not)."""
        summary = monitor.summary()
        self.messages_checked += summary["messages_checked"]
        self.violations += summary["violations"]
        self.violation_examples.extend(summary["violation_examples"][: 10 - len(self.violation_examples)])

    @contextlib.contextmanager
    def scenario(self, name: str, monitor: Any, detail: str = "") -> Iterator[list[str]]:
        """Record a scenario: pass when the block ends without an exception and the monitor saw no new
        violation. Append notes to the yielded list; they join the detail."""
        notes: list[str] = [detail] if detail else []
        m0, v0, t0 = monitor.messages_checked, monitor.violation_count, time.monotonic()
        result, error = "pass", ""
        try:
            yield notes
        except BaseException as exc:
            result, error = "fail", f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            raise
        finally:
            new_v = monitor.violation_count - v0
            if new_v and result == "pass":
                result, error = "fail", f"{new_v} monitor violations: {monitor.violations[-new_v:][:3]}"
            text = "; ".join(n for n in [*notes, error] if n)
            self.scenarios.append(
                ScenarioResult(
                    name, result, text, monitor.messages_checked - m0, new_v, round(time.monotonic() - t0, 2)
                )
            )
        if new_v:  # the scenario's own checks passed, but the monitor saw an unsafe or malformed output
            raise AssertionError(f"scenario {name}: {error}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "generated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} cpus",
            "duration_s": round(time.monotonic() - self.started, 1),
            "passed": sum(s.result == "pass" for s in self.scenarios),
            "failed": sum(s.result != "pass" for s in self.scenarios),
            "messages_checked": self.messages_checked,
            "violations": self.violations,
            "violation_examples": self.violation_examples,
            "scenarios": [asdict(s) for s in self.scenarios],
            "extra": self.extra,
        }

    def markdown(self) -> str:
        d = self.to_dict()
        lines = [
            f"# Reliability report ({d['kind']})",
            "",
            f"Generated {d['generated']} on {d['machine']}; {d['duration_s']} s. "
            f"Scenarios: {d['passed']} passed,"
            f" {d['failed']} failed. Invariant monitor: **{d['messages_checked']} messages checked, "
            f"{d['violations']} violations**.",
            "",
            "| scenario | result | messages | violations | time (s) | detail |",
            "|---|---|---|---|---|---|",
        ]
        for s in d["scenarios"]:
            detail = s["detail"].replace("|", "\\|").replace("\n", " ")
            lines.append(
                f"| {s['name']} | {s['result']} | {s['messages_checked']} | {s['violations']} | "
                f"{s['duration_s']} | {detail} |"
            )
        if d["violation_examples"]:
            lines += ["", "Violations (first 10):", ""] + [f"- {v}" for v in d["violation_examples"]]
        if d["extra"]:
            lines += ["", "## Figures", "", "```json", json.dumps(d["extra"], indent=1), "```"]
        return "\n".join(lines) + "\n"

    def write(self, directory: Path | None = None) -> Path:
        out = Path(directory) if directory is not None else report_dir()
        out.mkdir(parents=True, exist_ok=True)
        (out / "reliability.json").write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        (out / "reliability.md").write_text(self.markdown())
        return out
