"""The live ROS 2 node `lrm4d`: camera streams in, 4D Gaussians out (`ros2 run ros2_lrm4d lrm4d_node`).

A thin rclpy shell. What it does itself is only ROS plumbing:

- parameters: every `NodeParams` field declared with its description (`ros2 param describe`),
  read back once into a `NodeParams`; invalid values end the node with a clear error (exit 2).
  Parameters are read at startup only: runtime changes are rejected with that reason.
- inputs: per camera a message_filters Subscriber for the image (Image or CompressedImage, by
  `image_transport`) and one for its CameraInfo, QoS from `input_qos`/`qos_depth`; one
  ApproximateTimeSynchronizer(queue_size, sync_slop_s) over all of them.
- dead cameras: the synchronizer waits for every input, so one silent camera would stop all output.
  Our Subscribers feed the synchronizer through relays we own; a watchdog (`live.CameraLiveness`,
  timeout `live.stall_timeout_s` = max(1 s, 3 / update_rate_hz)) marks a camera stalled when it has
  been silent that long while others deliver, logs it, reports it in /diagnostics (WARN) and
  rebuilds the synchronizer over the live cameras; the camera's next messages bring it back.
- work: the synchronizer callback only queues the group (`live.LiveWorker.submit`); the worker
  thread decodes, poses (tf2, non-blocking), windows, reconstructs (one at a time, newest due
  window wins) and publishes, exactly like the bag replay drives the same core objects.
- outputs on `~/...` (the node's namespace and name: /lrm4d/gaussians by default), QoS from
  `output_qos`: `OutputEncoder.output_topics()` and every predicted view's topics up front
  (`pipeline.predicted_view_names`), so that a subscriber can find each one before it is rendered.
  The 4D set is only encoded while `~/gaussians_4d` has subscribers; with
  `predicted_views_on_demand` (the default) a predicted view is only rendered while one of its
  image, camera_info or depth topics has a subscriber (RViz, ros2 bag record): on a CPU the
  renders are a quarter of a window's cost. Every stamp is the window end.
- /diagnostics (DiagnosticArray, reliable) every `diagnostics_period_s`.
- QoS mismatch: a publisher whose QoS cannot reach an input subscription (best effort into a
  reliable `input_qos`) is logged and reported in /diagnostics (WARN, counter qos_incompatible).
- shutdown: Ctrl-C or an external shutdown stops the worker (waiting up to 2 s for a running
  reconstruction; it is a daemon thread and publishes nothing after that), destroys the node and
  returns 0 without a traceback, also when Ctrl-C comes again while stopping (`process.run`); if
  the worker is still inside a reconstruction then, the process ends with os._exit.
"""

from __future__ import annotations

import sys
import threading
from typing import Any, Sequence

import message_filters
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.logging import get_logger
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_policy_name_from_kind

from lrm4d_core.pipeline import Reconstructor, predicted_view_names

from . import process
from .backend import make_backend
from .live import CameraLiveness, LiveWorker, SyncedGroup, stall_timeout_s
from .msgdefs import RclpyFactory
from .params import NodeParams, parameter_declarations, params_from_values
from .shell import NODE_NAME, OutputEncoder
from .tf import Tf2Lookup

__all__ = ["ReconstructionNode", "StartupError", "qos_profile", "main"]

EXIT_BAD_PARAMETERS = 2
EXIT_STARTUP_FAILED = 1
STOP_TIMEOUT_S = 2.0


class StartupError(RuntimeError):
    """The node cannot start (invalid parameters, no model); `exit_code` is what main returns."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


TF_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE,
                    durability=DurabilityPolicy.VOLATILE)


def qos_profile(kind: str, depth: int) -> QoSProfile:
    """'sensor_data': best effort, volatile, keep last `depth`; 'reliable': reliable, volatile."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=ReliabilityPolicy.BEST_EFFORT if kind == "sensor_data" else ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.VOLATILE,
    )


class ReconstructionNode(Node):
    """The `lrm4d` node. `backend` may be given (tests); by default `make_backend(params)`."""

    def __init__(self, *, backend: Any = None, **node_kwargs: Any) -> None:
        super().__init__(NODE_NAME, **node_kwargs)
        self.worker: LiveWorker | None = None
        self._closed = False
        try:
            self._setup(backend)
        except BaseException:
            self.destroy_node()
            raise

    # ------------------------------------------------------------------ setup
    def _setup(self, backend: Any) -> None:
        log = self.get_logger()
        self.params = self._read_parameters()
        p = self.params
        if backend is None:
            try:
                backend = make_backend(p)
            except Exception as err:  # noqa: BLE001 - missing checkpoint, bad device, remote not built ...
                raise StartupError(f"cannot create the {p.backend} backend: {type(err).__name__}: {err}", EXIT_STARTUP_FAILED) from err
        self.backend = backend
        self.factory = RclpyFactory()
        self.encoder = OutputEncoder(p, self.factory, backend.model_id)

        # Attribute names: rclpy's Node keeps _publishers, _subscriptions, _timers ... of its own.
        self._out_qos = qos_profile(p.output_qos, p.qos_depth)
        self._outputs: dict[str, Any] = {}
        self._outputs_lock = threading.Lock()
        for topic, typename in self.encoder.output_topics():
            self._publisher(topic, typename)
        pipeline = p.pipeline_config()
        for name in predicted_view_names(p.cameras, pipeline):
            for topic, typename in self.encoder.predicted_topics(name):
                self._publisher(topic, typename)
        self._diagnostics_pub = self.create_publisher(
            RclpyFactory.message_class("diagnostic_msgs/msg/DiagnosticArray"), self.encoder.topics.diagnostics,
            QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE,
                       durability=DurabilityPolicy.VOLATILE))

        self.tf = Tf2Lookup.for_node(self, cache_duration_s=max(10.0, 2 * p.window_duration_s))
        self.worker = LiveWorker(
            p, Reconstructor(backend, pipeline), self.encoder, self.tf.lookup, self._publish,
            clock_ns=self._now_ns, log_warning=log.warning, log_error=log.error,
            with_4d=self._want_4d, ok=self.context.ok, views=self._want_view if p.predicted_views_on_demand else None)

        # Inputs: our Subscribers -> (liveness, relay) -> the current synchronizer.
        in_qos = qos_profile(p.input_qos, p.qos_depth)
        image_type = RclpyFactory.message_class(
            "sensor_msgs/msg/CompressedImage" if p.image_transport == "compressed" else "sensor_msgs/msg/Image")
        info_type = RclpyFactory.message_class("sensor_msgs/msg/CameraInfo")
        self.liveness = CameraLiveness(p.cameras, stall_timeout_s(p))
        self._filter_subscribers = []
        for camera in p.cameras:
            for kind, msg_type, topic in (("image", image_type, p.image_topic(camera)),
                                          ("info", info_type, p.camera_info_topic(camera))):
                sub = message_filters.Subscriber(self, msg_type, topic, qos_profile=in_qos,
                                                 event_callbacks=self._qos_events(topic))
                sub.registerCallback(self._on_message, camera, kind)
                self._filter_subscribers.append(sub)
        self._relays: dict[str, tuple[Any, Any]] = {}
        self._sync: Any = None
        self._rebuild_sync()

        self._watchdog = self.create_timer(stall_timeout_s(p) / 3, self._check_liveness)
        self._diagnostics_timer = self.create_timer(p.diagnostics_period_s, self._publish_diagnostics)
        self.add_on_set_parameters_callback(self._reject_runtime_changes)
        self.worker.start()
        log.info(
            f"reconstructing {len(p.cameras)} camera(s) {list(p.cameras)} in '{p.fixed_frame}' with {backend.model_id}: "
            f"window {p.window_duration_s} s, {p.update_rate_hz} Hz, <= {p.max_views} views; "
            f"outputs on {self.get_fully_qualified_name()}/*")

    def _read_parameters(self) -> NodeParams:
        values = {}
        for decl in parameter_declarations():
            descriptor = ParameterDescriptor(description=decl.description)
            if decl.ros_type.startswith("double"):
                # rclpy fixes a parameter's type from its default: `update_rate_hz: 10` in a YAML or
                # launch file would then be rejected. Doubles are dynamically typed and coerced
                # (params_from_values accepts integers for doubles, and rejects anything else).
                descriptor.dynamic_typing = True
                descriptor.additional_constraints = f"{decl.ros_type.replace('_', ' ')} (integers accepted)"
            try:
                values[decl.name] = self.declare_parameter(decl.name, decl.default, descriptor).value
            except Exception as err:  # noqa: BLE001 - InvalidParameterTypeException, InvalidParameterValueException
                raise StartupError(f"parameter {decl.name!r}: {err}", EXIT_BAD_PARAMETERS) from err
        self._declared = set(values)
        overrides = getattr(self, "_parameter_overrides", {})  # rclpy keeps no public list of them
        ignored = sorted(n for n in overrides if n not in self._declared and n != "use_sim_time"
                         and not n.startswith("qos_overrides.") and not self.has_parameter(n))
        if ignored:
            self.get_logger().warning(f"ignoring unknown parameter(s) {ignored}: not lrm4d parameters (typo?)")
        try:
            return params_from_values(values)
        except ValueError as err:
            raise StartupError(str(err), EXIT_BAD_PARAMETERS) from err

    def _reject_runtime_changes(self, parameters: Sequence[Any]) -> SetParametersResult:
        ours = [p.name for p in parameters if p.name in self._declared]
        if ours:
            return SetParametersResult(
                successful=False,
                reason=f"{ours}: lrm4d parameters are read at startup; change the params file and restart the node")
        return SetParametersResult(successful=True)

    # ------------------------------------------------------------------ inputs
    def _now_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    def _qos_events(self, topic: str) -> Any:
        """Subscription event callbacks: a publisher whose QoS does not match ours is reported
        (log + /diagnostics) instead of leaving the node silently without input."""
        def incompatible(info: Any) -> None:
            policy = qos_policy_name_from_kind(info.last_policy_kind)
            self.get_logger().warning(
                f"a publisher on {topic} has QoS incompatible with this subscription ({policy}; input_qos is "
                f"'{self.params.input_qos}'): its messages cannot arrive. Match input_qos to the publisher.",
                throttle_duration_sec=10.0)
            self.worker.qos_incompatible(topic, policy)

        return SubscriptionEventCallbacks(incompatible_qos=incompatible)

    def _rebuild_sync(self) -> None:
        """A fresh ApproximateTimeSynchronizer over the live cameras (queued partial sets are dropped)."""
        live = self.liveness.live
        self._relays = {c: (message_filters.SimpleFilter(), message_filters.SimpleFilter()) for c in live}
        inputs = [f for c in live for f in self._relays[c]]
        self._sync = message_filters.ApproximateTimeSynchronizer(inputs, self.params.queue_size, self.params.sync_slop_s)
        self._sync.registerCallback(self._on_synced, live)

    def _on_message(self, msg: Any, camera: str, kind: str) -> None:
        now = self._now_ns()
        if kind == "image":
            self.worker.frame_received(camera, now)
        if self.liveness.seen(camera, kind, now):
            self.get_logger().info(f"camera '{camera}' publishes again: synchronizing {list(self.liveness.live)}")
            self._live_set_changed()
        relays = self._relays.get(camera)
        if relays is not None:
            relays[0 if kind == "image" else 1].signalMessage(msg)

    def _on_synced(self, *args: Any) -> None:
        """Synchronizer output: (image, info) per live camera, then the camera names. Never blocks."""
        *msgs, cameras = args
        members = tuple((c, msgs[2 * i], msgs[2 * i + 1]) for i, c in enumerate(cameras))
        self.worker.submit(SyncedGroup(self._now_ns(), members))

    def _check_liveness(self) -> None:
        if self.liveness.check(self._now_ns()):
            stalled = list(self.liveness.stalled)
            if stalled:
                self.get_logger().warning(
                    f"camera(s) {stalled} silent for > {stall_timeout_s(self.params):.1f} s: synchronizing {list(self.liveness.live)} only")
            else:
                self.get_logger().info(f"all cameras live again: synchronizing {list(self.liveness.live)}")
            self._live_set_changed()

    def _live_set_changed(self) -> None:
        self.worker.set_stalled(self.liveness.stalled)
        self._rebuild_sync()

    # ------------------------------------------------------------------ outputs
    def _publisher(self, topic: str, typename: str) -> Any:
        with self._outputs_lock:
            pub = self._outputs.get(topic)
            if pub is None:
                name = topic if topic.startswith("/") else f"~/{topic}"  # /tf and /diagnostics are absolute
                # /tf as tf2's TransformBroadcaster publishes it (reliable, depth 100), whatever
                # output_qos says: tf2 listeners and RViz subscribe reliably and would miss best effort
                qos = TF_QOS if topic == self.encoder.topics.tf else self._out_qos
                pub = self.create_publisher(RclpyFactory.message_class(typename), name, qos)
                self._outputs[topic] = pub
            return pub

    def _want_4d(self) -> bool:
        pub = self._outputs.get(self.encoder.topics.gaussians_4d)
        return self.params.publish_gaussians_4d and pub is not None and pub.get_subscription_count() > 0

    def _want_view(self, name: str) -> bool:
        """Whether the predicted view `name` has a subscriber on any of its topics."""
        for topic, _ in self.encoder.predicted_topics(name):
            pub = self._outputs.get(topic)
            if pub is not None and pub.get_subscription_count() > 0:
                return True
        return False

    def _publish(self, items: list[tuple[str, str, Any]]) -> None:
        """Worker thread: publish the encoder's (relative topic, type, message) list."""
        for topic, typename, msg in items:
            self._publisher(topic, typename).publish(msg)

    def _publish_diagnostics(self) -> None:
        msg = self.worker.diagnostics_msg(self.factory, self._now_ns(), self.get_fully_qualified_name())
        self._diagnostics_pub.publish(msg)

    # ------------------------------------------------------------------ shutdown
    def close(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Stop the worker (idempotent); a reconstruction still running after `timeout_s` is abandoned."""
        if self._closed:
            return
        self._closed = True
        if self.worker is not None and not self.worker.stop(timeout_s):
            message = f"a reconstruction is still running after {timeout_s:.0f} s: exiting without it"
            if self.context.ok():
                self.get_logger().warning(message)
            else:  # after Ctrl-C the context is down and /rosout with it
                print(f"[{NODE_NAME}] {message}", file=sys.stderr)

    def destroy_node(self) -> None:
        self.close()
        super().destroy_node()


def main(argv: Sequence[str] | None = None, restore_sigint: bool = False) -> int:
    """`ros2 run ros2_lrm4d lrm4d_node [--ros-args ...]`; returns the exit code.

    `argv` is like sys.argv (program name first; default sys.argv). Exit codes: 0 after a clean
    shutdown (Ctrl-C included), 2 for invalid parameters, 1 when the model cannot be loaded.
    Ctrl-C handling (also when pressed again while stopping): `process.run`.
    """

    def startup_failed(err: BaseException) -> int:
        get_logger(NODE_NAME).fatal(f"cannot start: {err}")
        return err.exit_code

    return process.run(ReconstructionNode, argv, on_error=((StartupError,), startup_failed),
                       busy=lambda node: node.worker is not None and node.worker.running, restore_sigint=restore_sigint)


if __name__ == "__main__":
    sys.exit(main())
