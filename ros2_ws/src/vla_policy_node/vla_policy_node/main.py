"""``vla_policy_node`` executable: the lifecycle node on a multi-threaded executor, with its own SIGINT and
SIGTERM handling (a final hold goes out before the context shuts down) and autostart."""

from __future__ import annotations

import signal
import threading

import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.signals import SignalHandlerOptions

from vla_policy_node.node import VLAPolicyNode
from vla_policy_node.realtime import schedule_process_threads
from vla_policy_node.ros_logging import forward_core_logs


def main(args: list[str] | None = None) -> None:
    # our own SIGINT/SIGTERM handling: rclpy's would shut the context down before the final hold is sent
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda signum, frame: stop.set())
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    node = VLAPolicyNode()
    forward_core_logs(node.get_logger())
    schedule_process_threads()
    executor = MultiThreadedExecutor(num_threads=4)
    executor.add_node(node)
    spinner = threading.Thread(target=_spin, args=(executor, stop), name="vla_executor", daemon=True)
    try:
        if bool(node.get_parameter("autostart").value):
            node.trigger_configure()
            if node._runtime is not None and not stop.is_set():
                node.trigger_activate()
        spinner.start()
        while not stop.wait(0.5) and spinner.is_alive():
            pass
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.shutdown_hold()
        executor.shutdown()
        if spinner.is_alive():
            spinner.join(timeout=10.0)
        node._free("shut down")
        node.destroy_node()
        if rclpy.ok():
            rclpy.try_shutdown()


def _spin(executor: MultiThreadedExecutor, stop: threading.Event) -> None:
    try:
        while not stop.is_set():
            try:
                executor.spin_once(timeout_sec=0.2)
            except _rclpy.InvalidHandle:
                # cleanup destroyed an entity while the executor was waiting on it; the next wait set
                # no longer holds it, so spinning goes on (letting it end the thread froze the node)
                continue
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        stop.set()


if __name__ == "__main__":
    main()
