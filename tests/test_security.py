"""Security basics: no unpickling, no ``torch.load`` without ``weights_only=True``, no ``eval``/``exec``
anywhere in the repository's Python (the syntax tree is scanned, so strings and comments, this file's
included, never match); the node resolves and validates a checkpoint path before reading it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SKIP_DIRS = {".venv", "build", "install", "log", ".git", "out", "__pycache__", ".ruff_cache", ".pytest_cache"}
BANNED_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "shelve", "joblib"}


def _python_files() -> list[Path]:
    out = []
    for path in REPO.rglob("*.py"):
        rel = path.relative_to(REPO).parts
        if not any(part in SKIP_DIRS for part in rel[:-1]):
            out.append(path)
    return sorted(out)


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def findings(source: str, name: str = "<src>") -> list[str]:
    """Each banned construct in ``source``, as ``name:line: what``."""
    found = []
    for node in ast.walk(ast.parse(source, filename=name)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in BANNED_MODULES:
                    found.append(f"{name}:{node.lineno}: import {alias.name}")
        elif isinstance(node, ast.ImportFrom):
            if (node.module or "").split(".")[0] in BANNED_MODULES:
                found.append(f"{name}:{node.lineno}: from {node.module} import ...")
        elif isinstance(node, ast.Call):
            func = _dotted(node.func)
            if isinstance(node.func, ast.Name) and node.func.id in ("eval", "exec"):
                found.append(f"{name}:{node.lineno}: {node.func.id}()")
            elif func == "torch.load" or func.endswith(".torch.load"):
                weights_only = [k for k in node.keywords if k.arg == "weights_only"]
                ok = (
                    weights_only
                    and isinstance(weights_only[0].value, ast.Constant)
                    and weights_only[0].value.value
                )
                if not ok:
                    found.append(f"{name}:{node.lineno}: torch.load without weights_only=True")
            elif func.split(".")[0] in BANNED_MODULES:
                found.append(f"{name}:{node.lineno}: {func}()")
    return found


def test_scanner_catches_each_construct() -> None:
    bad = "\n".join(
        [
            "import pickle",
            "from joblib import load",
            "x = eval('1')",
            "exec('y = 1')",
            "import torch",
            "torch.load('m.pt')",
            "torch.load('m.pt', weights_only=False)",
        ]
    )
    assert len(findings(bad)) == 6, findings(bad)
    good = "import torch\ntorch.load('m.pt', weights_only=True)\nmodel.eval()\ns = 'pickle eval( exec('\n"
    assert findings(good) == []


def test_repository_python_has_no_unsafe_deserialisation_or_eval() -> None:
    files = _python_files()
    assert len(files) > 20
    problems = []
    for path in files:
        problems += findings(path.read_text(encoding="utf-8"), str(path.relative_to(REPO)))
    assert not problems, "\n".join(problems)


@pytest.mark.ros
def test_node_resolves_and_validates_checkpoint_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from vla_policy.runtime.workers import resolve_checkpoint

    monkeypatch.delenv("VLA_CHECKPOINT_DIR", raising=False)
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text("{}")
    link = tmp_path / "link"
    link.symlink_to(ckpt)
    assert resolve_checkpoint(str(tmp_path / "ckpt" / ".." / "link")) == ckpt.resolve()
    for bad, text in (
        ("", "no checkpoint"),
        (str(tmp_path / "missing"), "not found"),
        (str(ckpt / "config.json"), "must be a directory"),
        (str(tmp_path), "no config.json"),
    ):
        with pytest.raises(ValueError, match=text):
            resolve_checkpoint(bad)
    monkeypatch.setenv("VLA_CHECKPOINT_DIR", str(ckpt))  # the docker default when the parameter is empty
    assert resolve_checkpoint("") == ckpt.resolve()
