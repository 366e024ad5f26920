"""``vla-sim serve``: the ALOHA simulation as a ROS 2 robot (rclpy).

Publishes: camera images (``/cameras/<model name>/image_raw``, sensor_msgs/Image rgb8, sensor-data QoS),
``/joint_states`` (the 14 joints of config/aloha.yaml), ``/clock`` (sim time; monotonic across resets),
``/instruction`` (latched), ``/vla_sim/reward`` (Float64), ``/vla_sim/success`` (Bool), ``/vla_sim/status``
(String, JSON: step, sim time, achieved rate, command state, last error) and ``/vla_sim/episode`` (String,
JSON per finished episode). Subscribes: ``/<group>_controller/joint_trajectory`` and
``/<group>_controller/commands`` for left_arm, right_arm, claw. Service ``/vla_sim/reset``
(std_srvs/Trigger): a new episode with the next seed.

Modes: ``realtime`` steps at 50 Hz of wall time; ``lockstep`` steps as soon as the commands for the next
step are there (forward: a new command; trajectory: the active trajectories cover the next step), else
after ``--lockstep-wait`` wall seconds holding. Given the same commands, lock-step is deterministic (the
physics runs on sim time only). Bad policy input holds and is logged and reported on the status topic.

With ``--sync-topic`` (the policy node's ``~/tick``, vla_msgs/ControlTick, node parameter ``lockstep``)
the closed loop itself is deterministic: the sim steps past ``t`` only once the node has reported its
tick at ``t`` and every command message of it has arrived; it waits for the node's first tick however
long the node takes to start. ``--policy-reset`` names the node's reset service (vla_msgs/Reset), called
before each episode so that episodes do not depend on each other. Sim time advances one step at each
reset, so that every observation has its own stamp; the clock is published after the observation.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from vla_policy.stamps import sec_nanosec, to_seconds

from vla_sim.aloha_env import DT, EPISODE_STEPS, INSTRUCTIONS, JOINT_NAMES, AlohaSim, VideoSpec
from vla_sim.commands import CommandArbiter
from vla_sim.demos import parse_camera_map
from vla_sim.episode_recorder import GROUP_INDICES
from vla_sim.eval_metrics import jerk_mean_abs

SIM_T0 = 1.0  # sim time of the first step (a zero stamp means "unset" to the node)
GROUPS: dict[str, list[str]] = {g: [JOINT_NAMES[i] for i in idx] for g, idx in GROUP_INDICES.items()}


def _time_msg(t: float) -> Any:
    from builtin_interfaces.msg import Time

    sec, nanosec = sec_nanosec(t)
    return Time(sec=sec, nanosec=nanosec)


class SimServer:
    """Owns the sim and the ROS interfaces; ``run()`` steps until ``stop`` or ``max_steps``."""

    def __init__(
        self,
        node: Any,
        task: str,
        camera_map: Mapping[str, str],
        height: int,
        width: int,
        mode: str = "realtime",
        seed: int = 0,
        command_timeout: float = 1.0,
        lockstep_wait: float = 2.0,
        episode_steps: int = 0,
        episodes: int = 0,
        video_dir: str = "",
        video_episodes: int = 1,
        results: str = "",
        camera_every: int = 1,
        sync_topic: str = "",
        policy_reset: str = "",
        startup_timeout: float = 300.0,
    ) -> None:
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
        from rosgraph_msgs.msg import Clock
        from sensor_msgs.msg import Image, JointState
        from std_msgs.msg import Bool, Float64, Float64MultiArray, String
        from std_srvs.srv import Trigger
        from trajectory_msgs.msg import JointTrajectory

        self.node = node
        self.task = task
        self.cams = dict(camera_map)
        self.mode = mode
        self.seed = seed
        self.next_seed = seed
        self.lockstep_wait = lockstep_wait
        self.episode_steps = episode_steps
        self.episodes = episodes
        self.camera_every = max(1, int(camera_every))
        self.video_dir = Path(video_dir) if video_dir else None
        self.video_episodes = video_episodes  # episodes filmed for people (VIDEO), from the first
        self.results = Path(results) if results else None
        self.sim = AlohaSim(task, cameras=list(self.cams), height=height, width=width)
        lo, hi = self.sim.joint_limits()
        self.arbiter = CommandArbiter(JOINT_NAMES, lo, hi, GROUPS, command_timeout=command_timeout)
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.stop = threading.Event()
        self.reset_requested = threading.Event()
        self.clock_steps = 0  # sim time = SIM_T0 + clock_steps * DT: exact in nanoseconds
        self.startup_timeout = startup_timeout
        self.tick_ns = -1  # stamp of the policy node's last tick (-1: none yet)
        self.tick_commands = 0  # command messages the node had published at that tick
        self._last_obs: list[tuple[Any, Any]] = []
        self.episode_index = -1
        self.frames: list[np.ndarray] = []
        self.targets: list[np.ndarray] = []  # the episode's 14-D targets, one per step (smoothness)
        self.step_wall: list[float] = []
        self.tick_wall: list[float] = []
        self.latencies: list[float] = []
        self._obs_wall: dict[int, float] = {}
        self.total_steps = 0
        self._finished = False

        latched = QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
        )
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.clock_pub = node.create_publisher(Clock, "/clock", 10)
        self.js_pub = node.create_publisher(JointState, "/joint_states", qos_profile_sensor_data)
        self.img_pubs = {
            c: node.create_publisher(Image, f"/cameras/{m}/image_raw", qos_profile_sensor_data)
            for c, m in self.cams.items()
        }
        self.instr_pub = node.create_publisher(String, "/instruction", latched)
        self.reward_pub = node.create_publisher(Float64, "/vla_sim/reward", reliable)
        self.success_pub = node.create_publisher(Bool, "/vla_sim/success", reliable)
        self.status_pub = node.create_publisher(String, "/vla_sim/status", reliable)
        self.episode_pub = node.create_publisher(String, "/vla_sim/episode", QoSProfile(depth=100))
        self._Image, self._JointState, self._Clock = Image, JointState, Clock
        self._Float64, self._Bool, self._String = Float64, Bool, String
        for g in GROUPS:
            node.create_subscription(
                JointTrajectory,
                f"/{g}_controller/joint_trajectory",
                lambda m, g=g: self._on_traj(g, m),
                reliable,
            )
            node.create_subscription(
                Float64MultiArray,
                f"/{g}_controller/commands",
                lambda m, g=g: self._on_forward(g, m),
                reliable,
            )
        node.create_service(Trigger, "/vla_sim/reset", self._on_reset)
        self.sync = bool(sync_topic)
        if sync_topic:
            from vla_msgs.msg import ControlTick

            node.create_subscription(ControlTick, sync_topic, self._on_tick, QoSProfile(depth=10))
        self.policy_reset = None
        if policy_reset:
            from vla_msgs.srv import Reset

            self.policy_reset = node.create_client(Reset, policy_reset)
            self._reset_request = Reset.Request()
        self.instr_pub.publish(String(data=INSTRUCTIONS[task]))

    @property
    def sim_time(self) -> float:
        return SIM_T0 + self.clock_steps * DT

    def _now_ns(self) -> int:
        return round(SIM_T0 * 1e9) + self.clock_steps * round(DT * 1e9)

    # --- inputs -------------------------------------------------------------------------------------
    def _on_traj(self, group: str, msg: Any) -> None:
        stamp = to_seconds(msg.header.stamp)
        try:
            times = [to_seconds(p.time_from_start) for p in msg.points]
            positions = [list(p.positions) for p in msg.points]
        except Exception as exc:
            positions, times = [], []
            self.node.get_logger().warning(f"bad trajectory on {group}: {exc}")
        with self.lock:
            ok = self.arbiter.on_trajectory(group, msg.joint_names, times, positions, stamp, self.sim_time)
            if ok and stamp > 0:
                self.latencies.append(self.sim_time - stamp)
        self.wake.set()

    def _on_forward(self, group: str, msg: Any) -> None:
        with self.lock:
            self.arbiter.on_forward(group, list(msg.data), self.sim_time)
        self.wake.set()

    def _on_tick(self, msg: Any) -> None:
        with self.lock:
            self.tick_ns = max(self.tick_ns, msg.stamp.sec * 1_000_000_000 + msg.stamp.nanosec)
            self.tick_commands = max(self.tick_commands, int(msg.commands_published))
        self.wake.set()

    def _on_reset(self, request: Any, response: Any) -> Any:
        self.reset_requested.set()
        self.wake.set()
        response.success = True
        response.message = f"reset requested: next episode seed {self.next_seed}"
        return response

    # --- episode ------------------------------------------------------------------------------------
    def _finish_episode(self, reason: str) -> None:
        if self.episode_index < 0 or self._finished:
            return
        self._finished = True
        s = self.sim
        result = {
            "episode": self.episode_index,
            "seed": self.seed_of_episode,
            "task": self.task,
            "success": bool(s.success),
            "max_reward": s.max_reward,
            "steps": s.steps,
            "time_to_success": None if s.first_success_step is None else round(s.first_success_step * DT, 3),
            "reason": reason,
            "rejected_commands": self.arbiter.rejected,
            "accepted_commands": self.arbiter.accepted,
            "final_qpos": [float(x) for x in s.qpos()],  # exact: two lock-step runs compare equal
            "jerk_mean_abs": jerk_mean_abs(np.asarray(self.targets)),  # of the targets the robot got
        }
        self.episode_pub.publish(self._String(data=json.dumps(result)))
        self.node.get_logger().info(f"episode done: {json.dumps(result)}")
        if self.results is not None:
            with self.results.open("a") as f:
                f.write(json.dumps(result) + "\n")
        if self.video_dir is not None and self.frames:
            self.video_dir.mkdir(parents=True, exist_ok=True)
            write_video(self.video_dir / f"episode_{self.episode_index:03d}.gif", self.frames)
        self.frames = []
        self.targets = []

    def _start_episode(self) -> None:
        self.episode_index += 1
        self._finished = False
        self.seed_of_episode = self.next_seed
        self.next_seed += 1
        if self.episode_index > 0:
            self.clock_steps += 1  # the reset observation gets its own stamp
        self._reset_policy()
        with self.lock:
            qpos = self.sim.reset(seed=self.seed_of_episode)
            self.arbiter.reset(qpos, self.sim_time)
            self.arbiter.rejected = self.arbiter.accepted = 0
        self.node.get_logger().info(f"episode {self.episode_index} (seed {self.seed_of_episode}) starts")

    def _reset_policy(self) -> None:
        """Call the policy node's reset service (waits for the node to offer it; bounded)."""
        client, log = self.policy_reset, self.node.get_logger()
        if client is None:
            return
        if not client.wait_for_service(timeout_sec=self.startup_timeout):
            log.warning(f"policy reset service {client.srv_name} not available; episode starts without it")
            return
        done = threading.Event()
        future = client.call_async(self._reset_request)
        future.add_done_callback(lambda _: done.set())
        if not done.wait(self.startup_timeout) or future.result() is None or not future.result().success:
            reason = future.result().message if future.done() and future.result() is not None else "no answer"
            log.warning(f"policy reset failed: {reason}")

    # --- outputs ------------------------------------------------------------------------------------
    def _publish_obs(self, qpos: np.ndarray, reward: float, success: bool, render: bool) -> None:
        stamp = _time_msg(self.sim_time)
        out: list[tuple[Any, Any]] = []
        if render:
            images = self.sim.render()
            for c, img in images.items():
                msg = self._Image()
                msg.header.stamp = stamp
                msg.header.frame_id = c
                msg.height, msg.width = int(img.shape[0]), int(img.shape[1])
                msg.encoding = "rgb8"
                msg.step = msg.width * 3
                msg.data = img.tobytes()
                out.append((self.img_pubs[c], msg))
        js = self._JointState()
        js.header.stamp = stamp
        js.name = list(JOINT_NAMES)
        js.position = [float(x) for x in qpos]
        js.velocity = [float(x) for x in self.sim.qvel()]
        out.append((self.js_pub, js))
        out.append((self.reward_pub, self._Float64(data=float(reward))))
        out.append((self.success_pub, self._Bool(data=bool(success))))
        out.append((self.clock_pub, self._Clock(clock=stamp)))  # last: a tick at this time finds the inputs
        self._last_obs = out
        self._republish()

    def _republish(self) -> None:
        """(Re)send the current observation: a node that starts late, or lost a best-effort frame, gets it."""
        for pub, msg in self._last_obs:
            pub.publish(msg)

    def _publish_status(self) -> None:
        ticks = np.diff(self.tick_wall[-100:]) if len(self.tick_wall) > 2 else np.array([])
        st = {
            "mode": self.mode,
            "task": self.task,
            "episode": self.episode_index,
            "step": self.sim.steps,
            "sim_time": round(self.sim_time, 4),
            "rate_hz": round(float(1.0 / np.median(ticks)), 2) if ticks.size else None,
            "sim_step_ms_median": round(float(np.median(self.step_wall[-100:])) * 1e3, 3)
            if self.step_wall
            else None,
            "reward": self.sim.max_reward,
            **self.arbiter.status(self.sim_time),
        }
        self.status_pub.publish(self._String(data=json.dumps(st)))

    # --- loop ---------------------------------------------------------------------------------------
    def _ready(self, seq0: int, t_next: float) -> bool:
        """Lock-step: the commands for the step to ``t_next`` are there (with a sync topic: the node's tick
        at the current time and every command message it had published by then)."""
        with self.lock:
            if self.sync:
                return self.tick_ns >= self._now_ns() and self.arbiter.seq >= self.tick_commands
            cov = self.arbiter.covered_until()
            if cov is None:
                return self.arbiter.seq != seq0  # a new forward command (or a rejected one: hold)
            return cov >= t_next - 1e-9

    def _wait_for_commands(self) -> None:
        """Lock-step: wait until :meth:`_ready` (bounded by the lockstep wait; before the node's first
        tick, by the startup timeout), re-sending the observation every half second meanwhile."""
        seq0 = self.arbiter.seq
        wait = self.startup_timeout if self.sync and self.tick_ns < 0 else self.lockstep_wait
        start = time.perf_counter()
        resent = start
        while not self.stop.is_set() and not self.reset_requested.is_set():
            if self._ready(seq0, self.sim_time + DT):
                return
            now = time.perf_counter()
            if now - start >= wait:
                if self.sync:
                    self.node.get_logger().warning(
                        f"no policy tick for t={self.sim_time:.3f} after {wait} s; stepping"
                    )
                return
            if self.sync and now - resent >= 0.5:
                self._republish()
                resent = now
            self.wake.wait(min(wait - (now - start), 0.05))
            self.wake.clear()

    def run(self, max_steps: int = 0) -> None:
        log = self.node.get_logger()
        self._start_episode()
        qpos = self.sim.qpos()
        self._publish_obs(qpos, 0.0, False, True)
        next_wall = time.perf_counter()
        last_status = 0.0
        while not self.stop.is_set():
            if max_steps and self.total_steps >= max_steps:
                break
            if self.mode == "realtime":
                next_wall += DT
                delay = next_wall - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                else:
                    next_wall = time.perf_counter()  # late: do not try to catch up
            else:
                self._wait_for_commands()
            if self.reset_requested.is_set():
                self.reset_requested.clear()
                self._finish_episode("reset service")
                self._start_episode()
                qpos = self.sim.qpos()
                self._publish_obs(qpos, 0.0, False, True)
                continue
            with self.lock:
                action = self.arbiter.command(self.sim_time)
                events = self.arbiter.pop_events()
            for e in events:
                log.warning(e)
            t0 = time.perf_counter()
            res = self.sim.step(action)
            self.targets.append(action)
            filming = self.video_dir is not None and self.episode_index < self.video_episodes
            if filming and self.sim.steps % VIDEO.every == 0:
                self.frames.append(self.sim.render_view(VIDEO.camera, VIDEO.height, VIDEO.width))
            self.step_wall.append(time.perf_counter() - t0)
            self.tick_wall.append(time.perf_counter())
            self.total_steps += 1
            self.clock_steps += 1
            render = self.sim.steps % self.camera_every == 0
            self._publish_obs(res.qpos, res.reward, res.success, render)
            if time.perf_counter() - last_status > 0.2:
                self._publish_status()
                last_status = time.perf_counter()
            limit = self.episode_steps
            if limit and self.sim.steps >= limit:
                if self.sync:
                    self._wait_for_commands()  # the node's last tick lands in this episode, not the next
                self._finish_episode("time limit")
                if self.episodes and self.episode_index + 1 >= self.episodes:
                    break
                self._start_episode()
                self._publish_obs(self.sim.qpos(), 0.0, False, True)
        self._publish_status()

    def close(self) -> None:
        self.sim.close()


VIDEO = VideoSpec()  # --video-dir: every episode from the angle camera at 240x320, for people


def write_video(path: Path, frames: list[np.ndarray], fps: int = 25) -> Path:
    import imageio.v2 as imageio

    path = Path(path)
    if path.suffix == ".gif":
        imageio.mimsave(path, frames[::2], duration=2.0 / fps * 1000, loop=0)
    else:
        imageio.mimsave(path, frames, fps=fps)
    return path


def serve_main(args: Any) -> int:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    rclpy.init()
    node = rclpy.create_node("vla_sim")
    episode_steps = args.episode_steps or 0
    server = SimServer(
        node,
        args.task,
        parse_camera_map(args.camera_map),
        args.height,
        args.width,
        mode=args.mode,
        seed=args.seed,
        command_timeout=args.command_timeout,
        lockstep_wait=args.lockstep_wait,
        episode_steps=episode_steps,
        episodes=getattr(args, "episodes", 0) or 0,
        video_dir=getattr(args, "video_dir", "") or "",
        video_episodes=getattr(args, "video_episodes", 1),
        results=getattr(args, "results", "") or "",
        camera_every=getattr(args, "camera_every", 1) or 1,
        sync_topic=getattr(args, "sync_topic", "") or "",
        policy_reset=getattr(args, "policy_reset", "") or "",
        startup_timeout=getattr(args, "startup_timeout", 300.0),
    )
    executor = SingleThreadedExecutor()  # callbacks are short; the loop runs on the main thread
    executor.add_node(node)
    spin = threading.Thread(target=executor.spin, daemon=True)
    spin.start()
    import signal

    signal.signal(signal.SIGTERM, lambda *_: server.stop.set())
    signal.signal(signal.SIGINT, lambda *_: server.stop.set())
    node.get_logger().info(
        f"vla-sim serve: task {args.task}, mode {args.mode}, cameras {server.cams}, "
        f"{args.height}x{args.width}, episode steps {episode_steps or EPISODE_STEPS[args.task]}"
    )
    try:
        server.run(max_steps=args.max_steps)
        server._finish_episode("stopped")
    finally:
        server.close()
        executor.shutdown(timeout_sec=1.0)
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0
