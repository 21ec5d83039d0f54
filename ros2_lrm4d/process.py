"""The life of an rclpy process, shared by our executables: init, spin, a clean stop on Ctrl-C.

Why this exists (found by running the node in a real ROS 2): in a terminal, Ctrl-C reaches the
node and `ros2 launch` forwards another SIGINT, and users press it again. A SIGINT during
`destroy_node()` printed a traceback; one during interpreter finalization (which resets Python's
handlers to the default) killed the process with -2; and finalizing while a worker thread was
inside torch's C++ code unwound it into std::terminate (SIGABRT). So, once stopping: SIGINT is
ignored (the stop is bounded), and a process whose worker is still busy ends with os._exit.

rclpy is imported when `run` is called, not with this module, so the module stays importable
(and testable) where ROS 2 is missing.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from typing import Any, Callable, Sequence

__all__ = ["run"]

log = logging.getLogger(__name__)


def run(
    make_node: Callable[[], Any],
    argv: Sequence[str] | None = None,
    *,
    done: Callable[[Any], bool] | None = None,
    on_error: tuple[tuple[type[BaseException], ...], Callable[[BaseException], int]] | None = None,
    busy: Callable[[Any], bool] = lambda node: False,
    restore_sigint: bool = False,
) -> int:
    """Init rclpy, build the node, spin it until shutdown (or until `done(node)`), stop cleanly.

    Args:
        make_node: builds the node (after rclpy.init).
        argv: like sys.argv (program name first); None: sys.argv.
        done: polled every 0.1 s; the process ends when it returns True (None: spin until shutdown).
        on_error: (exception types, handler returning the exit code) for start-up failures.
        busy: after the node is destroyed, True when a thread of it is still working: the
            process then ends at once with os._exit (module docstring).
        restore_sigint: put the previous SIGINT handler back before returning (callers that go
            on running, e.g. tests); by default SIGINT stays ignored until the process ends.
    Returns:
        the exit code: 0 after a clean stop (Ctrl-C included), else on_error's.
    """
    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor

    errors, handler = on_error if on_error is not None else ((), None)
    rclpy.init(args=list(argv) if argv is not None else None)
    node = None
    code = 0
    executor = SingleThreadedExecutor()
    previous_sigint = signal.getsignal(signal.SIGINT)
    try:
        node = make_node()
        executor.add_node(node)
        if done is None:
            executor.spin()
        else:
            while rclpy.ok() and not done(node):
                executor.spin_once(timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except errors as err:
        code = handler(err)
    except Exception:  # noqa: BLE001
        # Ctrl-C: rclpy's signal thread shuts the context down while the executor builds its wait
        # set, which then raises RCLError ("the given context is not valid") instead of
        # ExternalShutdownException (a race seen in a live-node launch test). A clean stop too.
        if rclpy.ok():
            raise
        log.info("stopped: the ROS context was shut down while spinning")
    finally:
        _ignore_sigint()  # stopping is bounded: more Ctrl-C must not cut it half-way
        try:
            executor.shutdown(timeout_sec=0.5)
            if node is not None:
                node.destroy_node()
        except KeyboardInterrupt:  # one that came before the line above
            pass
        rclpy.try_shutdown()
        _ignore_sigint()  # try_shutdown restores the handler rclpy.init replaced
    if node is not None and busy(node):
        _hard_exit(code)
    if restore_sigint:
        _restore_sigint(previous_sigint)
    return code


def _ignore_sigint() -> None:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def _restore_sigint(handler: Any) -> None:
    if threading.current_thread() is threading.main_thread() and handler is not None:
        signal.signal(signal.SIGINT, handler)


def _hard_exit(code: int) -> None:
    """End the process without finalizing the interpreter (module docstring)."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
