"""The workspace: colcon sees and builds every package, the install has vla_msgs, one lock file."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import ros_harness

ROOT = ros_harness.REPO_ROOT
WS = ROOT / "ros2_ws"
VENV_BIN = Path(sys.executable).parent
PACKAGES = {"vla_msgs", "vla_policy", "vla_policy_node"}


def _colcon() -> str:
    exe = shutil.which("colcon") or str(VENV_BIN / "colcon")
    if not os.access(exe, os.X_OK):
        pytest.skip("colcon is not installed (run `make setup`)")
    return exe


def _build_env() -> dict[str, str]:
    env = dict(os.environ)
    prefix = str(Path(sys.prefix))
    env.setdefault("AMENT_PREFIX_PATH", prefix)
    env.setdefault("CMAKE_PREFIX_PATH", prefix)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def test_colcon_lists_the_three_packages():
    out = subprocess.run(
        [_colcon(), "--log-base", os.devnull, "list", "--names-only", "--base-paths", str(WS / "src")],
        capture_output=True,
        text=True,
        env=_build_env(),
        check=True,
    ).stdout.split()
    assert set(out) >= PACKAGES, out


def test_install_has_vla_msgs():
    share = WS / "install" / "vla_msgs" / "share" / "vla_msgs"
    if not share.is_dir():
        pytest.fail("ros2_ws/install/vla_msgs is missing: run `make setup`")
    for rel in ("package.xml", "msg/ActionChunk.msg", "msg/PolicyStatus.msg", "srv/Reset.srv"):
        assert (share / rel).is_file(), rel
    assert (
        WS / "install" / "vla_msgs" / "share" / "ament_index" / "resource_index" / "packages" / "vla_msgs"
    ).exists()
    libs = {
        p.name for p in (WS / "install" / "vla_msgs" / "lib").glob("libvla_msgs__rosidl_typesupport_*.so")
    }
    assert {"libvla_msgs__rosidl_typesupport_c.so", "libvla_msgs__rosidl_typesupport_fastrtps_c.so"} <= libs


def test_env_sh_gives_a_shell_the_overlay():
    script = (
        'source scripts/env.sh >/dev/null && python -c "import os, vla_msgs.msg, rclpy.serialization as s; '
        "s.serialize_message(vla_msgs.msg.ActionChunk()); "
        "e = os.environ; print(e['ROS_DOMAIN_ID'], e['ROS_AUTOMATIC_DISCOVERY_RANGE'], e['ROS_LOG_DIR'])\""
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ROS_", "AMENT_", "_ROS_", "COLCON"))}
    env.pop("PYTHONPATH", None)
    env.pop("LD_LIBRARY_PATH", None)
    out = subprocess.run(["bash", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    domain, rng, log_dir = out.stdout.split()
    assert 0 <= int(domain) <= 232 and rng == "LOCALHOST" and log_dir


@pytest.mark.slow
def test_workspace_builds_from_sources(tmp_path):
    """A clean colcon build of every package into a temporary build/install (the real one is untouched)."""
    skip = [
        p.parent.name
        for p in (WS / "src").glob("*/package.xml")
        if "<build_type>ament_python</build_type>" in p.read_text() and not (p.parent / "setup.py").exists()
    ]
    cmd = [
        _colcon(),
        "--log-base",
        str(tmp_path / "log"),
        "build",
        "--base-paths",
        str(WS / "src"),
        "--build-base",
        str(tmp_path / "build"),
        "--install-base",
        str(tmp_path / "install"),
        "--event-handlers",
        "console_cohesion-",
        "status-",
        "--cmake-args",
        "-DBUILD_TESTING=OFF",
        f"-DPython3_EXECUTABLE={sys.executable}",
    ]
    if skip:
        cmd += ["--packages-skip", *skip]
    env = _build_env()
    env["AMENT_PREFIX_PATH"] = env["CMAKE_PREFIX_PATH"] = sys.prefix  # no overlay: build from scratch
    env.pop("PYTHONPATH", None)
    result = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    install = tmp_path / "install"
    assert (install / "vla_msgs" / "share" / "vla_msgs" / "msg" / "ActionChunk.msg").is_file()
    assert list((install / "vla_msgs" / "lib").glob("python3.11/site-packages/vla_msgs/msg/_action_chunk.py"))
    assert (
        install / "vla_policy" / "share" / "ament_index" / "resource_index" / "packages" / "vla_policy"
    ).exists()
    assert not skip, f"built, but skipped ament_python packages without setup.py: {skip}"


def _torch_pin(text: str) -> str | None:
    m = re.search(r"(?:torch==|TORCH_VERSION=)([0-9][0-9.]*[0-9])", text)
    return m.group(1) if m else None


def test_docker_installs_the_same_lock_as_setup():
    lock = ROOT / "requirements" / "lock.txt"
    setup_sh = (ROOT / "scripts" / "setup.sh").read_text()
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    assert 'LOCK="$ROOT/requirements/lock.txt"' in setup_sh
    copied = re.findall(r"^COPY\s+(\S*lock[^\s]*)\s", dockerfile, flags=re.M)
    assert copied and all(Path(c) == Path("requirements/lock.txt") for c in copied), copied
    assert (ROOT / copied[0]).resolve() == lock.resolve()
    # The lock, plus the simulation extra that setup adds and the robot image leaves out; one torch pin.
    files = sorted(p.name for p in (ROOT / "requirements").iterdir() if p.suffix == ".txt")
    assert files == ["lock.txt", "sim.txt"], files
    lock_pins = dict(line.split("==", 1) for line in lock.read_text().splitlines() if "==" in line)
    sim_text = (ROOT / "requirements" / "sim.txt").read_text()
    for line in sim_text.splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==", 1)
            assert name.lower() != "torch", "the simulation extra must not pin torch"
            assert lock_pins.get(name, version) == version, (
                f"{name} pinned differently in sim.txt and lock.txt"
            )
    pins = {_torch_pin(lock.read_text()), _torch_pin(setup_sh), _torch_pin(dockerfile)}
    assert len(pins) == 1 and None not in pins, pins
    # Every line is an exact pin; editable project packages are not in it.
    for line in lock.read_text().splitlines():
        if line and not line.startswith("#"):
            assert re.fullmatch(r"[A-Za-z0-9_.\-]+==[0-9A-Za-z.+!\-]+", line), line
            assert not line.lower().startswith(("vla-policy", "vla_policy", "vla-export", "vla_export")), line
