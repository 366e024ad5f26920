"""The layers of DESIGN.md: dependencies point one way. Checked on the import statements themselves."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROS_MODULES = ("rclpy", "vla_msgs", "sensor_msgs", "std_msgs", "trajectory_msgs", "diagnostic_msgs")


def _imported_roots(package: Path) -> dict[str, set[str]]:
    """file -> top-level module names it imports (at any depth of the file)."""
    found: dict[str, set[str]] = {}
    for path in package.rglob("*.py"):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(ROOT))] = names
    return found


def test_core_never_imports_ros_or_the_adapter() -> None:
    core = _imported_roots(ROOT / "ros2_ws" / "src" / "vla_policy" / "vla_policy")
    bad = {f: n & {*ROS_MODULES, "vla_policy_node", "vla_export", "vla_sim"} for f, n in core.items()}
    assert not {f: n for f, n in bad.items() if n}


def test_export_imports_only_the_core() -> None:
    export = _imported_roots(ROOT / "export" / "vla_export")
    bad = {f: n & {*ROS_MODULES, "vla_policy_node", "vla_sim"} for f, n in export.items()}
    assert not {f: n for f, n in bad.items() if n}


def _core_import_graph() -> dict[str, set[str]]:
    """core module -> core modules it imports (at any depth: lazy and type-only imports count too)."""
    src = ROOT / "ros2_ws" / "src" / "vla_policy"
    modules = {
        ".".join(p.relative_to(src).with_suffix("").parts).removesuffix(".__init__"): p
        for p in (src / "vla_policy").rglob("*.py")
    }
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            deps.update(t for t in targets if t in modules and t != name and not t.endswith("vla_policy"))
        graph[name] = deps
    return graph


def test_core_has_no_import_cycles() -> None:
    graph = _core_import_graph()
    assert len(graph) > 30  # the scan found the core
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycles.append([*path[path.index(dep) :], dep])
            elif dep not in state:
                visit(dep, [*path, dep])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)
