"""The live node: its ROS-free logic here, its rclpy wiring under ROS.

- Parameter declarations (`params.parameter_declarations`, `params_from_values`): every NodeParams
  field, typed as rclpy will infer it, and config/reconstruct.yaml loads through them.
- `live.LiveWorker` and `live.CameraLiveness`, with rosbags messages, a TfBuffer and a stand-in
  reconstructor: every group reaches the window in order, newest due window wins, TF wait, drops.
- `node.py` run against a minimal stand-in of the rclpy / message_filters API it uses (signatures
  as in ROS 2 Jazzy): parameter errors, routing, dead-camera handling, publishing, shutdown. This
  checks the node's own logic; the real API is checked by the `ros` tests below.
- Launch files run against recording stand-ins of launch / launch_ros; the RViz config; the
  executable.
- `@pytest.mark.ros`: the real node under rclpy (skipped where ROS 2 is not installed).
"""

from __future__ import annotations

import ast
import importlib
import math
import os
import signal
import sys
import threading
import time
import types
from dataclasses import fields
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import yaml

from lrm4d_core.stream import WindowBuffer
from ros2_lrm4d.live import CameraLiveness, LiveWorker, SyncedGroup, queue_limit, stall_timeout_s
from ros2_lrm4d.msgdefs import RosbagsFactory, make_typestore
from ros2_lrm4d.params import PARAM_DOCS, NodeParams, load_params_file, parameter_declarations, params_from_values
from ros2_lrm4d.shell import Diagnostics, FrameAssembler, camera_info_msg
from ros2_lrm4d.tf import TfBuffer

ROOT = Path(__file__).resolve().parents[1]
NODE_PY = ROOT / "ros2_lrm4d" / "node.py"
LAUNCH = ROOT / "launch"
NS = 1_000_000_000


# ============================================================================ parameter declarations
def _rclpy_inferred_type(value: Any) -> str:
    """rclpy's Parameter.Type.from_parameter_value (Jazzy), as a lower-case name."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "double"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        for kind, cls in (("byte", bytes), ("bool", bool), ("integer", int), ("double", float), ("string", str)):
            if all(isinstance(v, cls) and not (cls is int and isinstance(v, bool)) for v in value):
                return f"{kind}_array"
    raise TypeError(value)


def test_declarations_cover_every_field_with_docs_and_rclpy_types():
    decls = parameter_declarations()
    assert [d.name for d in decls] == [f.name for f in fields(NodeParams)]
    assert set(PARAM_DOCS) == {f.name for f in fields(NodeParams)}
    defaults = NodeParams()
    for d in decls:
        assert d.description == PARAM_DOCS[d.name] and d.description.strip()
        if isinstance(d.default, list):
            assert d.default, f"{d.name}: empty list default (rclpy would infer a byte array)"
            assert tuple(d.default) == getattr(defaults, d.name)
        else:
            assert d.default == getattr(defaults, d.name)
        # The type rclpy infers from the default is the one declared (ints never stand for doubles).
        assert _rclpy_inferred_type(d.default) == d.ros_type, d.name


def test_params_from_values_coerces_and_validates():
    import array

    p = params_from_values({"update_rate_hz": 10, "scene_center": array.array("d", [1, 2, 3]),
                            "forecast_horizons_s": [1, 2], "cameras": ["a", "b"]})
    assert p.update_rate_hz == 10.0 and isinstance(p.update_rate_hz, float)
    assert p.scene_center == (1.0, 2.0, 3.0) and p.forecast_horizons_s == (1.0, 2.0) and p.cameras == ("a", "b")
    assert params_from_values({}) == NodeParams()
    # the ground reaches the pipeline only when it is declared known
    assert NodeParams().pipeline_config().ground_z == 0.0
    assert params_from_values({"ground_z": -1.5}).pipeline_config().ground_z == -1.5
    assert params_from_values({"use_ground_plane": False, "ground_z": -1.5}).pipeline_config().ground_z is None
    for values, words in [
        ({"queue_size": 2.5}, ["queue_size", "integer"]),
        ({"queue_size": True}, ["queue_size", "integer"]),
        ({"publish_gaussians_4d": 1}, ["publish_gaussians_4d", "bool"]),
        ({"cameras": "front"}, ["cameras", "string_array"]),
        ({"update_rate_hz": "fast"}, ["update_rate_hz", "double"]),
        ({"image_transport": "theora"}, ["image_transport"]),
        ({"window_duration_s": 9.0}, ["jump_back_s"]),
        ({"virtual_cameras_json": "{"}, ["virtual_cameras_json"]),
        ({"diagnostics_period_s": 0.0}, ["diagnostics_period_s"]),
        ({"ground_z": math.nan}, ["ground_z"]),
        ({"no_such_parameter": 1}, ["no_such_parameter"]),
    ]:
        with pytest.raises(ValueError) as info:
            params_from_values(values)
        assert all(w in str(info.value) for w in words), (values, str(info.value))


@pytest.mark.parametrize("parameter, prior, key, recorded, value, other, bad", [
    ("motion_prior_radius", "motion", "radius", {"motion": {"radius": 6, "patch": 3}, "align": {"search": 0.3}}, 4,
     ("align", "search", 0.3), (-2,)),
    ("view_align_search", "align", "search", {"align": {"search": 0.3, "carve": 0.3}, "motion": {"radius": 6}}, 0.2,
     ("motion", "radius", 6), (-0.5, 1.5)),
    ("stereo_search", "stereo", "search", {"stereo": {"search": 0.7, "persist": 2.0}, "align": {"search": 0.3}}, 0.4,
     ("align", "search", 0.3), (-0.5, 2.5)),
    ("time_carve_width", "carve", "width", {"carve": {"width": 0.5, "steady": 2.0}, "stereo": {"search": 0.7}}, 0.8,
     ("stereo", "search", 0.7), (-0.5, 2.5)),
    ("thickness_depth", "thickness", "depth", {"thickness": {"depth": 0.7, "offset": 1.5}, "carve": {"width": 0.5}}, 0.4,
     ("carve", "width", 0.5), (-0.5, 3.5)),
])
def test_node_parameter_overrides_one_prior_the_checkpoint_records(tmp_path, parameter, prior, key, recorded, value,
                                                                   other, bad):
    """The local backend loads a tiny checkpoint whose config records `recorded` as its priors: -1
    keeps what it records, 0 turns that prior off, a value sets that constant and keeps the prior's
    others, another prior is left as recorded; out-of-range values are refused."""
    import torch

    from lrm4d_core.io.checkpoint import save_checkpoint
    from lrm4d_core.model.config import preset
    from lrm4d_core.model.lrm4d import LRM4D
    from lrm4d_core.model.prior import PriorConstants
    from ros2_lrm4d.backend import make_backend

    path = tmp_path / "m.safetensors"
    torch.manual_seed(0)
    save_checkpoint(path, LRM4D(preset("tiny", image_size=(32, 32), prior=recorded)))
    got = {v: make_backend(NodeParams(checkpoint=str(path), device="cpu", **{parameter: v}), offline=True).model.config.prior
           for v in (-1, 0, value)}
    constants = type(getattr(PriorConstants(), prior))  # built here from `recorded`, not by the override path
    assert getattr(got[-1], prior) == constants(**recorded[prior])
    assert getattr(getattr(got[0], prior), key) == 0
    assert getattr(got[value], prior) == constants(**{**recorded[prior], key: value})
    other_prior, other_key, other_value = other
    assert all(getattr(getattr(p, other_prior), other_key) == other_value for p in got.values())
    for b in bad:
        with pytest.raises(ValueError, match=parameter):
            params_from_values({parameter: b})


def test_shipped_params_file_matches_the_declarations():
    data = yaml.safe_load((ROOT / "config" / "reconstruct.yaml").read_text(encoding="utf-8"))
    values = data["lrm4d"]["ros__parameters"]
    decls = {d.name: d for d in parameter_declarations()}
    assert set(values) == set(decls)
    for name, value in values.items():
        ros_type = decls[name].ros_type
        # rclpy checks the YAML type against the declared one for everything but doubles.
        if not ros_type.startswith("double"):
            assert _rclpy_inferred_type(value) == ros_type, name
    assert params_from_values(values) == load_params_file(ROOT / "config" / "reconstruct.yaml")


# ============================================================================ live worker
CAMERAS = ("a", "b")
W, H = 8, 6
K = np.array([[10.0, 0, 4], [0, 10.0, 3], [0, 0, 1]])


@pytest.fixture(scope="module")
def factory():
    return RosbagsFactory(make_typestore())


def _tf_message(factory, frames: list[str], stamp_ns: int = 0):
    f = factory
    transforms = [
        f.make("geometry_msgs/msg/TransformStamped", header=f.header("map", stamp_ns), child_frame_id=frame,
               transform=f.make("geometry_msgs/msg/Transform",
                                translation=f.make("geometry_msgs/msg/Vector3", x=float(i), y=0.0, z=0.0),
                                rotation=f.make("geometry_msgs/msg/Quaternion", x=0.0, y=0.0, z=0.0, w=1.0)))
        for i, frame in enumerate(frames)
    ]
    return f.make("tf2_msgs/msg/TFMessage", transforms=transforms)


def _group(factory, stamp_ns: int, received_ns: int, cameras=CAMERAS, bad: str | None = None) -> SyncedGroup:
    members = []
    for cam in cameras:
        image = factory.make("sensor_msgs/msg/Image", header=factory.header(f"cam_{cam}", stamp_ns), height=H,
                             width=W, encoding="rgb8" if cam != bad else "yuv422", is_bigendian=0, step=3 * W,
                             data=np.full(H * W * 3, 100, np.uint8))
        members.append((cam, image, camera_info_msg(factory, f"cam_{cam}", stamp_ns, K, W, H)))
    return SyncedGroup(received_ns, tuple(members))


class FakeReconstructor:
    """Records windows; optionally fails, or blocks until released (a slow model)."""

    def __init__(self):
        self.windows = []
        self.fail = False
        self.release = threading.Event()
        self.release.set()
        self.entered = threading.Event()

    def process(self, window, views=None):
        self.views = views
        self.entered.set()
        self.release.wait(10)
        if self.fail:
            raise RuntimeError("model exploded")
        self.windows.append(window)
        return SimpleNamespace(window=window, timings={"model": 0.001})


class FakeEncoder:
    def encode(self, products, with_4d=None):
        return [("gaussians", "sensor_msgs/msg/PointCloud2", (products.window.end_ns, with_4d))]


class Clock:
    def __init__(self, ns: int = 100 * NS):
        self.ns = ns

    def __call__(self) -> int:
        return self.ns


def _worker(factory, params=None, tf_frames=("cam_a", "cam_b"), **kwargs):
    params = params or NodeParams(cameras=CAMERAS, update_rate_hz=2.0, window_duration_s=2.0, min_steps=2, max_views=4)
    tf = TfBuffer()
    if tf_frames:
        tf.add(_tf_message(factory, list(tf_frames)), static=True)
    published, warnings = [], []
    clock = kwargs.pop("clock", Clock())
    worker = LiveWorker(params, kwargs.pop("reconstructor", FakeReconstructor()), FakeEncoder(), tf.lookup,
                        published.append, clock, warnings.append, **kwargs)
    return SimpleNamespace(worker=worker, tf=tf, published=published, warnings=warnings, clock=clock, params=params)


def test_worker_feeds_every_group_in_order_like_the_replay(factory):
    w = _worker(factory)
    reference = WindowBuffer(w.params.window_config(), camera_order=w.params.cameras)
    expected = []
    for i in range(30):  # 10 Hz groups, stepped one by one: nothing is skipped
        group = _group(factory, (10 + i / 10) * NS, w.clock.ns)
        w.worker.submit(group)
        assert w.worker.step() == 1
        window = reference.add_step([FrameAssembler(w.params).make_frame(c, im, w.tf.lookup, info) for c, im, info in group.members])
        if window is not None:
            expected.append(window)
    got = w.worker.reconstructor.windows
    assert [win.end_ns for win in got] == [win.end_ns for win in expected] and len(got) >= 5
    assert [[(f.camera, f.stamp_ns) for f in win.frames] for win in got] == [[(f.camera, f.stamp_ns) for f in win.frames] for win in expected]
    assert [p[0][2][0] for p in w.published] == [win.end_ns for win in expected]
    assert w.worker.diag.counters["windows"] == len(expected) and w.worker.diag.counters["windows_skipped"] == 0


def test_worker_reconstructs_only_the_newest_due_window(factory):
    w = _worker(factory)
    n = queue_limit(w.params)
    groups = [_group(factory, (10 + i / 10) * NS, w.clock.ns) for i in range(n)]
    for group in groups:  # all queued while "a reconstruction runs": one step drains them
        w.worker.submit(group)
    assert w.worker.step() == n and w.worker.queued() == 0
    reference = WindowBuffer(w.params.window_config(), camera_order=w.params.cameras)
    assembler = FrameAssembler(w.params)
    due = [win for g in groups
           if (win := reference.add_step([assembler.make_frame(c, im, w.tf.lookup, info) for c, im, info in g.members]))]
    assert len(w.worker.reconstructor.windows) == 1
    assert w.worker.reconstructor.windows[0].end_ns == due[-1].end_ns
    assert w.worker.diag.counters["windows_skipped"] == len(due) - 1 > 0


def test_worker_waits_for_tf_up_to_tf_wait_s(factory):
    w = _worker(factory, tf_frames=("cam_a",))  # cam_b's transform has not arrived yet
    w.worker.submit(_group(factory, 10 * NS, w.clock.ns))
    assert w.worker.step() == 0 and w.worker.queued() == 1  # waits: TF often arrives after the image
    w.tf.add(_tf_message(factory, ["cam_a", "cam_b"]), static=True)
    assert w.worker.step() == 1 and not w.worker.diag.drops

    w.worker.submit(_group(factory, 11 * NS, w.clock.ns, cameras=("a", "c")))  # cam_c never gets TF
    assert w.worker.step() == 0
    w.clock.ns += int(w.params.tf_wait_s * NS)
    assert w.worker.step() == 1
    assert w.worker.diag.drops == {"tf_missing": 1}
    assert any("cam_c" in m for m in w.warnings)

    w.worker.submit(_group(factory, 12 * NS, w.clock.ns, cameras=("c",)))
    w.clock.ns -= 50 * NS  # the clock jumped back (looping bag): the group does not wait forever
    assert w.worker.step() == 1 and w.worker.diag.drops == {"tf_missing": 2}


def test_worker_counts_bad_frames_overflow_and_failures(factory):
    w = _worker(factory)
    w.worker.submit(_group(factory, 10 * NS, w.clock.ns, bad="b"))
    w.worker.step()
    assert w.worker.diag.drops["unsupported_encoding"] == 1

    for i in range(queue_limit(w.params) + 3):
        w.worker.submit(_group(factory, (11 + i / 10) * NS, w.clock.ns))
    assert w.worker.queued() == queue_limit(w.params)
    assert w.worker.diag.drops["sync_queue_overflow"] == 3 * len(CAMERAS)

    w.worker.reconstructor.fail = True
    w.worker.step()
    assert w.worker.diag.drops["reconstruction_failed"] == 1 and w.worker.diag.backend_status.startswith("failing")
    w.worker.reconstructor.fail = False
    w.worker.submit(_group(factory, 30 * NS, w.clock.ns))
    w.worker.submit(_group(factory, 31 * NS, w.clock.ns))
    w.worker.step()
    assert w.worker.diag.backend_status == "ok" and w.published


def test_worker_diagnostics_report_stalled_cameras_and_queue(factory):
    w = _worker(factory)
    w.worker.frame_received("a", w.clock.ns)
    w.worker.set_stalled(["b"])
    msg = w.worker.diagnostics_msg(factory, w.clock.ns, "/lrm4d")
    status = msg.status[0]
    values = {kv.key: kv.value for kv in status.values}
    assert status.level == 1 and "stalled cameras: b" in status.message
    assert values["stalled_cameras"] == "b" and values["queued_groups"] == "0" and values["reconstructing"] == "false"
    w.worker.set_stalled([])
    status = w.worker.diagnostics_msg(factory, w.clock.ns, "/lrm4d").status[0]
    assert status.level == 0 and status.message == "reconstructing"


def test_diagnostics_name_the_predicted_views_of_the_latest_window():
    diag = Diagnostics()
    assert "predicted_views" not in dict(diag.key_values(0))
    diag.window_done(SimpleNamespace(timings={}, renders=[SimpleNamespace(name="front"), SimpleNamespace(name="back")]), 0.1)
    assert dict(diag.key_values(0))["predicted_views"] == "front, back"
    diag.window_done(SimpleNamespace(timings={}, renders=[]), 0.1)
    assert dict(diag.key_values(0))["predicted_views"] == "none"


def test_worker_thread_publishes_and_stops_without_publishing_late(factory):
    slow = FakeReconstructor()
    w = _worker(factory, reconstructor=slow)
    w.worker.start()
    try:
        for i in range(3):
            w.worker.submit(_group(factory, (10 + i) * NS, w.clock.ns))
        deadline = time.monotonic() + 10
        while not w.published and time.monotonic() < deadline:
            time.sleep(0.01)
        assert w.published
        slow.release.clear()
        slow.entered.clear()
        w.worker.submit(_group(factory, 20 * NS, w.clock.ns))
        w.worker.submit(_group(factory, 20 * NS + NS // 2, w.clock.ns))  # two steps: a window is due
        assert slow.entered.wait(10)  # a reconstruction is now running
        count = len(w.published)
        assert w.worker.stop(timeout_s=0.1) is False  # still inside it
    finally:
        slow.release.set()
    w.worker._thread.join(10)
    assert not w.worker._thread.is_alive() and len(w.published) == count


# ============================================================================ camera liveness
def test_liveness_routes_around_a_dead_camera_and_takes_it_back():
    live = CameraLiveness(("a", "b", "c"), timeout_s=1.0)
    assert not live.check(50 * NS) and live.live == ("a", "b", "c")  # nothing seen yet
    t = 100 * NS
    for cam in ("a", "b"):  # c never publishes
        for kind in ("image", "info"):
            live.seen(cam, kind, t)
    assert not live.check(t + NS // 2)
    for cam in ("a", "b"):
        live.seen(cam, "image", t + NS)
        live.seen(cam, "info", t + NS)
    assert live.check(t + int(1.5 * NS)) and live.stalled == ("c",) and live.live == ("a", "b")
    assert not live.check(t + int(1.6 * NS))  # no change, no rebuild
    assert not live.check(t + 10 * NS) and live.stalled == ("c",)  # all silent: left as it was
    assert not live.seen("c", "image", t + 11 * NS)  # image alone is not enough: camera_info missing
    # c is back; a and b, silent for 10 s while c delivers, are now the stalled ones.
    assert live.seen("c", "info", t + 11 * NS) and live.live == ("c",) and live.stalled == ("a", "b")
    assert not live.check(t + int(11.5 * NS))
    live.seen("a", "image", t + 12 * NS)
    assert live.seen("a", "info", t + 12 * NS) and live.live == ("a", "c")


def test_stall_timeout_and_queue_limit():
    assert stall_timeout_s(NodeParams(update_rate_hz=2.0)) == 1.5
    assert stall_timeout_s(NodeParams(update_rate_hz=10.0)) == 1.0
    assert queue_limit(NodeParams(max_views=12)) == 48 and queue_limit(NodeParams(max_views=1)) == 16


# ============================================================================ node.py: static checks
def test_node_module_compiles_and_has_its_entry_points():
    source = NODE_PY.read_text(encoding="utf-8")
    tree = ast.parse(source, filename=str(NODE_PY))
    compile(tree, str(NODE_PY), "exec")
    classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
    functions = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert "ReconstructionNode" in classes and "main" in functions
    assert [ast.unparse(b) for b in classes["ReconstructionNode"].bases] == ["Node"]
    for needed in ("parameter_declarations()", "declare_parameter(", "ApproximateTimeSynchronizer(",
                   "process.run(", "f'~/{topic}'"):
        assert needed in ast.unparse(tree), needed


def test_launcher_script_runs_node_main():
    script = ROOT / "scripts" / "lrm4d_node"
    assert os.access(script, os.X_OK)
    text = script.read_text(encoding="utf-8")
    assert "from ros2_lrm4d.node import main" in text and "sys.exit(main())" in text


# ============================================================================ node.py: stand-in rclpy
class _FakeMsg:
    def __init__(self, **kwargs):
        self.__dict__.update(kwargs)

    @classmethod
    def get_fields_and_field_types(cls):
        # as rclpy reports them for the fields our factory converts (DiagnosticStatus.level is `byte`)
        return {"level": "byte"} if cls.__name__ == "DiagnosticStatus" else {}


class _Recorder:
    def __init__(self):
        self.messages = []

    def publish(self, msg):
        self.messages.append(msg)


def _fake_ros_modules(state: SimpleNamespace) -> dict[str, types.ModuleType]:
    """The rclpy / rcl_interfaces / message_filters names node.py uses, with Jazzy's signatures."""
    class ParameterDescriptor:
        def __init__(self, description="", dynamic_typing=False, additional_constraints=""):
            self.description, self.dynamic_typing, self.additional_constraints = description, dynamic_typing, additional_constraints

    class InvalidParameterTypeException(Exception):
        pass

    class Node:
        def __init__(self, node_name, *, parameter_overrides=None, namespace=None, **kwargs):
            self._name, self._ns = node_name, namespace or "/"
            self._parameter_overrides = {p.name: p for p in parameter_overrides or []}
            self._params, self.descriptors, self.pubs, self.timers, self.set_callbacks = {}, {}, {}, [], []
            self.logs = state.logs
            self.context = SimpleNamespace(ok=lambda: state.ok)
            self.destroyed = False
            # rclpy's own bookkeeping (Jazzy Node.__init__): the subclass must not overwrite these.
            self._parameters, self._publishers, self._subscriptions, self._timers = {}, [], [], []
            self._clients, self._services, self._guards, self._descriptors = [], [], [], {}
            state.nodes.append(self)

        def declare_parameter(self, name, value, descriptor):
            if name in self._params:
                raise RuntimeError(f"{name} already declared")
            if name in self._parameter_overrides:
                given = self._parameter_overrides[name].value
                if not descriptor.dynamic_typing and _rclpy_inferred_type(given) != _rclpy_inferred_type(value):
                    raise InvalidParameterTypeException(f"Trying to set parameter {name!r} to {given!r} of another type")
                value = given
            self._params[name], self.descriptors[name] = value, descriptor
            return SimpleNamespace(name=name, value=value)

        def has_parameter(self, name):
            return name in self._params

        def add_on_set_parameters_callback(self, callback):
            self.set_callbacks.append(callback)

        def get_logger(self):
            return SimpleNamespace(**{level: (lambda m, level=level, **kw: state.logs.append((level, m)))
                                      for level in ("debug", "info", "warning", "error", "fatal")})

        def get_clock(self):
            return SimpleNamespace(now=lambda: SimpleNamespace(nanoseconds=state.now_ns))

        def get_fully_qualified_name(self):
            return self._ns.rstrip("/") + "/" + self._name

        def create_publisher(self, msg_type, topic, qos):
            name = topic.replace("~", self.get_fully_qualified_name(), 1) if topic.startswith("~") else topic
            pub = self.pubs[name] = _Recorder()
            pub.msg_type, pub.qos = msg_type, qos
            pub.get_subscription_count = lambda: state.subscribers.get(name, state.subscribers_4d)
            return pub

        def create_subscription(self, msg_type, topic, callback, qos_profile, event_callbacks=None):
            state.subscriptions[topic] = SimpleNamespace(msg_type=msg_type, callback=callback, qos=qos_profile,
                                                         events=event_callbacks)

        def create_timer(self, period, callback):
            self.timers.append((period, callback))

        def destroy_node(self):
            for name in ("_publishers", "_subscriptions", "_timers", "_clients", "_services", "_guards"):
                assert isinstance(getattr(self, name), list), f"the node overwrote rclpy's Node.{name}"
            self.destroyed = True

    class SimpleFilter:
        def __init__(self):
            self.callbacks = {}

        def registerCallback(self, cb, *args):
            conn = len(self.callbacks)
            self.callbacks[conn] = (cb, args)
            return conn

        def signalMessage(self, *msg):
            for cb, args in list(self.callbacks.values()):
                cb(*(msg + args))

    class Subscriber(SimpleFilter):
        def __init__(self, node, msg_type, topic, qos_profile=10, **kwargs):
            super().__init__()
            node.create_subscription(msg_type, topic, self.signalMessage, qos_profile=qos_profile, **kwargs)

    class ApproximateTimeSynchronizer(SimpleFilter):
        """Fires when every input holds a message (the test sends matching stamps)."""

        def __init__(self, fs, queue_size, slop):
            super().__init__()
            self.latest = [None] * len(fs)
            for i, f in enumerate(fs):
                f.registerCallback(self.add, i)
            state.syncs.append(self)
            self.queue_size, self.slop = queue_size, slop

        def add(self, msg, i):
            self.latest[i] = msg
            if all(m is not None for m in self.latest):
                msgs, self.latest = self.latest, [None] * len(self.latest)
                self.signalMessage(*msgs)

    class ExternalShutdownException(Exception):
        pass

    class SingleThreadedExecutor:
        def add_node(self, node):
            self.node = node

        def spin(self):
            state.spin()

        def shutdown(self, timeout_sec=None):
            return True

    class Enum:
        def __getattr__(self, name):
            return name

    def module(name, **attrs):
        m = types.ModuleType(name)
        m.__dict__.update(attrs)
        return m

    rclpy = module("rclpy", init=lambda args=None: state.calls.append(("init", args)),
                   try_shutdown=lambda: state.calls.append(("try_shutdown",)), ok=lambda: state.ok)
    return {
        "rclpy": rclpy,
        "rclpy.node": module("rclpy.node", Node=Node),
        "rclpy.qos": module("rclpy.qos", QoSProfile=lambda **kw: SimpleNamespace(**kw), DurabilityPolicy=Enum(),
                            HistoryPolicy=Enum(), ReliabilityPolicy=Enum(),
                            qos_policy_name_from_kind=lambda kind: {2: "RELIABILITY"}.get(kind, "UNKNOWN")),
        "rclpy.event_handler": module("rclpy.event_handler", SubscriptionEventCallbacks=SimpleNamespace),
        "rclpy.executors": module("rclpy.executors", ExternalShutdownException=ExternalShutdownException,
                                  SingleThreadedExecutor=SingleThreadedExecutor),
        "rclpy.logging": module("rclpy.logging", get_logger=lambda name: SimpleNamespace(
            fatal=lambda m: state.logs.append(("fatal", m)))),
        "rcl_interfaces": module("rcl_interfaces"),
        "rcl_interfaces.msg": module("rcl_interfaces.msg", ParameterDescriptor=ParameterDescriptor,
                                     SetParametersResult=lambda successful, reason="": SimpleNamespace(successful=successful, reason=reason)),
        "message_filters": module("message_filters", SimpleFilter=SimpleFilter, Subscriber=Subscriber,
                                  ApproximateTimeSynchronizer=ApproximateTimeSynchronizer),
    }


@pytest.fixture
def fake_ros(monkeypatch, factory):
    """node.py imported against the stand-in; Tf2Lookup.for_node gives a static TfBuffer."""
    state = SimpleNamespace(logs=[], nodes=[], subscriptions={}, syncs=[], calls=[], now_ns=100 * NS, ok=True,
                            subscribers_4d=0, subscribers={}, spin=lambda: None)
    for name, mod in _fake_ros_modules(state).items():
        monkeypatch.setitem(sys.modules, name, mod)
    monkeypatch.delitem(sys.modules, "ros2_lrm4d.node", raising=False)
    from ros2_lrm4d import msgdefs, tf

    classes: dict[str, type] = {}
    monkeypatch.setattr(msgdefs.RclpyFactory, "message_class",
                        staticmethod(lambda t: classes.setdefault(t, type(t.split("/")[-1], (_FakeMsg,), {}))))
    buffer = TfBuffer()
    buffer.add(_tf_message(factory, ["cam_a", "cam_b", "cam_c"]), static=True)
    monkeypatch.setattr(tf.Tf2Lookup, "for_node", classmethod(lambda cls, node, cache_duration_s=10.0: cls.__new__(cls)))
    monkeypatch.setattr(tf.Tf2Lookup, "lookup", lambda self, *a: buffer.lookup(*a))
    state.node_module = importlib.import_module("ros2_lrm4d.node")
    state.Parameter = lambda name, value: SimpleNamespace(name=name, value=value)
    yield state
    for node in state.nodes:
        if getattr(node, "worker", None) is not None:
            node.worker.stop(1.0)
    sys.modules.pop("ros2_lrm4d.node", None)
    import ros2_lrm4d

    ros2_lrm4d.__dict__.pop("node", None)  # the next import (e.g. the ros tests) gets the real one


def _node(fake_ros, node_class=None, **overrides):
    overrides = {"cameras": ["a", "b", "c"], "update_rate_hz": 2, "max_views": 4, **overrides}
    params = [fake_ros.Parameter(k, v) for k, v in overrides.items()]
    node_class = node_class or fake_ros.node_module.ReconstructionNode
    return node_class(backend=SimpleNamespace(model_id="fake"), parameter_overrides=params)


def test_fake_node_declares_parameters_publishers_and_subscriptions(fake_ros):
    node = _node(fake_ros)
    try:
        assert set(node._params) == {f.name for f in fields(NodeParams)}
        assert all(node.descriptors[n].description == PARAM_DOCS[n] for n in PARAM_DOCS)
        assert node.descriptors["update_rate_hz"].dynamic_typing and not node.descriptors["queue_size"].dynamic_typing
        assert node.params.update_rate_hz == 2.0 and node.params.cameras == ("a", "b", "c")
        predicted = {f"/lrm4d/predicted/{c}/{t}" for c in "abc" for t in ("image_raw", "camera_info", "depth")}
        assert set(node.pubs) == {"/lrm4d/gaussians", "/lrm4d/gaussians/forecast_500ms", "/lrm4d/gaussians/forecast_1000ms",
                                  "/lrm4d/gaussians_4d", "/lrm4d/gaussians/dynamic", "/lrm4d/motion_markers",
                                  "/lrm4d/moving_objects", "/diagnostics"} | predicted
        assert node.pubs["/lrm4d/gaussians"].qos.reliability == "RELIABLE"
        assert node.pubs["/diagnostics"].qos.reliability == "RELIABLE"
        subs = fake_ros.subscriptions
        assert set(subs) == {f"/cameras/{c}/{t}" for c in "abc" for t in ("image_raw", "camera_info")}
        assert subs["/cameras/a/image_raw"].msg_type.__name__ == "Image"
        assert subs["/cameras/a/image_raw"].qos.reliability == "BEST_EFFORT"
        assert len(fake_ros.syncs) == 1 and len(fake_ros.syncs[0].latest) == 6
        result = node.set_callbacks[0]([SimpleNamespace(name="max_views")])
        assert not result.successful and "restart" in result.reason
        assert node.set_callbacks[0]([SimpleNamespace(name="use_sim_time")]).successful
    finally:
        node.destroy_node()
    assert node.destroyed and not node.worker._thread.is_alive()


def test_fake_node_compressed_transport_and_unknown_parameter_warning(fake_ros):
    node = _node(fake_ros, image_transport="compressed", output_qos="sensor_data", typo_parameter=3)
    try:
        assert "/cameras/a/image_raw/compressed" in fake_ros.subscriptions
        assert fake_ros.subscriptions["/cameras/a/image_raw/compressed"].msg_type.__name__ == "CompressedImage"
        assert node.pubs["/lrm4d/gaussians"].qos.reliability == "BEST_EFFORT"
        assert any(level == "warning" and "typo_parameter" in m for level, m in fake_ros.logs)
    finally:
        node.destroy_node()


@pytest.mark.parametrize("overrides, words", [
    ({"image_transport": "theora"}, ["image_transport"]),
    ({"queue_size": "ten"}, ["queue_size"]),
    ({"update_rate_hz": "fast"}, ["update_rate_hz", "double"]),
])
def test_fake_node_rejects_bad_parameters_with_exit_code_2(fake_ros, overrides, words):
    mod = fake_ros.node_module
    with pytest.raises(mod.StartupError) as info:
        _node(fake_ros, **overrides)
    assert info.value.exit_code == 2 and all(w in str(info.value) for w in words)
    assert fake_ros.nodes[-1].destroyed


def test_fake_node_routes_groups_publishes_and_survives_a_dead_camera(fake_ros, factory):
    node = _node(fake_ros)
    node.worker.reconstructor, node.worker.encoder = FakeReconstructor(), FakeEncoder()
    try:
        subs = fake_ros.subscriptions
        timers = [callback for _, callback in node.timers]

        def send(cams, stamp_ns):
            fake_ros.now_ns = stamp_ns
            for cam, image, info in _group(factory, stamp_ns, stamp_ns, cameras=cams).members:
                subs[f"/cameras/{cam}/image_raw"].callback(image)
                subs[f"/cameras/{cam}/camera_info"].callback(info)
            for callback in timers:  # the watchdog and the diagnostics timer
                callback()

        send(("a", "b", "c"), 100 * NS)
        for i in range(1, 5):  # camera c dies; after 1.5 s (3 / update_rate_hz) it is routed around
            send(("a", "b"), 100 * NS + i * NS // 2)
        assert node.liveness.stalled == ("c",) and len(fake_ros.syncs) == 2 and len(fake_ros.syncs[-1].latest) == 4
        assert any(level == "warning" and "['c']" in m for level, m in fake_ros.logs)
        status = node._diagnostics_pub.messages[-1].status[0]
        assert status.level == b"\x01" and "stalled cameras: c" in status.message
        for i in range(5, 9):  # a and b go on: groups flow again
            send(("a", "b"), 100 * NS + i * NS // 2)
        windows = node.worker.reconstructor.windows
        deadline = time.monotonic() + 10
        while not (windows and windows[-1].end_ns == 104 * NS) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert windows[-1].end_ns == 104 * NS and set(windows[-1].cameras) == {"a", "b"}
        gaussians = node.pubs["/lrm4d/gaussians"].messages
        while gaussians[-1:] != [(104 * NS, False)] and time.monotonic() < deadline:
            time.sleep(0.01)
        assert gaussians[-1] == (104 * NS, False)  # nobody subscribes to gaussians_4d: not encoded
        assert node.worker.diag.counters["frames_in"] == 3 + 8 * 2

        send(("a", "b", "c"), 100 * NS + 6 * NS)  # c is back once both its topics delivered
        assert node.liveness.live == ("a", "b", "c") and len(fake_ros.syncs[-1].latest) == 6
        assert node._diagnostics_pub.messages[-1].status[0].level == b"\x00"
    finally:
        node.destroy_node()


def test_fake_node_reports_incompatible_qos(fake_ros):
    node = _node(fake_ros)
    try:
        topic = "/cameras/a/image_raw"
        fake_ros.subscriptions[topic].events.incompatible_qos(SimpleNamespace(last_policy_kind=2, total_count=1))
        assert any(level == "warning" and topic in m and "RELIABILITY" in m for level, m in fake_ros.logs)
        assert node.worker.diag.counters["qos_incompatible"] == 1
        node._publish_diagnostics()
        status = node._diagnostics_pub.messages[-1].status[0]
        assert status.level == b"\x01" and f"incompatible QoS (RELIABILITY) from a publisher on {topic}" in status.message
    finally:
        node.destroy_node()


def test_fake_node_publishes_encoder_output_lazily(fake_ros):
    node = _node(fake_ros)
    try:
        fake_ros.subscribers_4d = 0
        assert node._want_4d() is False
        fake_ros.subscribers_4d = 1
        assert node._want_4d() is True
        node._publish([("gaussians", "sensor_msgs/msg/PointCloud2", "cloud"),
                       ("predicted/front/image_raw", "sensor_msgs/msg/Image", "image")])
        assert node.pubs["/lrm4d/gaussians"].messages == ["cloud"]
        assert node.pubs["/lrm4d/predicted/front/image_raw"].messages == ["image"]
    finally:
        node.destroy_node()


def test_fake_node_renders_only_the_predicted_views_someone_watches(fake_ros):
    """`predicted_views_on_demand`: a view is rendered while any of its three topics has a
    subscriber; the worker hands that test to the reconstructor. Off: every view, every window."""
    node = _node(fake_ros, render_inputs_at_s=[0.0, 0.5])
    try:
        assert "/lrm4d/predicted/a_plus_500ms/depth" in node.pubs  # the future views' topics exist up front too
        assert not any(node._want_view(name) for name in ("a", "b", "c", "a@+0.50s"))
        fake_ros.subscribers["/lrm4d/predicted/b/depth"] = 1
        fake_ros.subscribers["/lrm4d/predicted/a_plus_500ms/camera_info"] = 2
        assert [name for name in ("a", "b", "c", "a@+0.50s", "b@+0.50s") if node._want_view(name)] == ["b", "a@+0.50s"]
        assert node.worker.views == node._want_view
        reconstructor = node.worker.reconstructor = FakeReconstructor()
        node.worker.encoder = FakeEncoder()
        node.worker._reconstruct(SimpleNamespace(end_ns=NS))
        assert reconstructor.views == node._want_view
    finally:
        node.destroy_node()
    every = _node(fake_ros, predicted_views_on_demand=False)
    try:
        assert every.worker.views is None
    finally:
        every.destroy_node()


def test_fake_main_exit_codes(fake_ros):
    mod = fake_ros.node_module
    original = mod.ReconstructionNode

    def raise_(exc):
        raise exc

    fake_ros.spin = lambda: raise_(KeyboardInterrupt())
    mod.ReconstructionNode = lambda: _node(fake_ros, original)
    try:
        handler = signal.getsignal(signal.SIGINT)
        assert mod.main([], restore_sigint=True) == 0  # Ctrl-C: clean exit
        assert fake_ros.nodes[-1].destroyed and ("try_shutdown",) in fake_ros.calls
        assert signal.getsignal(signal.SIGINT) is handler  # restored after the stop (SIGINT ignored during it)
        # a reconstruction still running after the stop timeout: exit without finalizing the interpreter
        exits = []
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(sys.modules["ros2_lrm4d.process"], "_hard_exit", exits.append)
            mp.setattr(type(fake_ros.nodes[-1].worker), "running", property(lambda self: True))
            mod.main([], restore_sigint=True)
        assert exits == [0]
        fake_ros.spin = lambda: raise_(sys.modules["rclpy.executors"].ExternalShutdownException())
        assert mod.main([], restore_sigint=True) == 0

        class RCLError(RuntimeError):
            pass

        # Ctrl-C shut the context down while the executor built its wait set (seen in a launch test):
        # a clean stop; the same error with the context still up is a real failure and propagates
        fake_ros.spin = lambda: raise_(RCLError("failed to initialize wait set: the given context is not valid"))
        fake_ros.ok = False
        assert mod.main([], restore_sigint=True) == 0
        fake_ros.ok = True
        with pytest.raises(RCLError):
            mod.main([], restore_sigint=True)
        mod.ReconstructionNode = lambda: _node(fake_ros, original, image_transport="theora")
        fake_ros.calls.clear()
        assert mod.main(["lrm4d_node", "--ros-args"]) == 2
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN  # the entry point's default: ignored until exit
        signal.signal(signal.SIGINT, handler)
        assert ("init", ["lrm4d_node", "--ros-args"]) in fake_ros.calls and ("try_shutdown",) in fake_ros.calls
        assert any(level == "fatal" and "image_transport" in m for level, m in fake_ros.logs)
    finally:
        mod.ReconstructionNode = original


# ============================================================================ launch files
def _load_launch_file(path: Path, share: Path, monkeypatch) -> tuple[types.ModuleType, list]:
    """Import a launch file against recording stand-ins of launch, launch_ros, ament_index_python."""
    created: list = []

    class Recorded:
        def __init__(self, *args, **kwargs):
            self.args, self.kwargs = args, kwargs
            created.append(self)

    def recording_module(name):
        m = types.ModuleType(name)
        m.__getattr__ = lambda attr: type(attr, (Recorded,), {})  # PEP 562
        return m

    for name in ("launch", "launch.actions", "launch.conditions", "launch.substitutions",
                 "launch.launch_description_sources", "launch_ros", "launch_ros.actions",
                 "launch_ros.parameter_descriptions"):
        monkeypatch.setitem(sys.modules, name, recording_module(name))
    monkeypatch.setitem(sys.modules, "ament_index_python", types.ModuleType("ament_index_python"))
    monkeypatch.setitem(sys.modules, "ament_index_python.packages", SimpleNamespace(
        get_package_share_directory=lambda pkg: str(share / pkg)))
    spec = importlib.util.spec_from_file_location(f"_launch_{path.stem.replace('.', '_')}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module, created


def _launch_context(values: dict[str, str]):
    """LaunchConfiguration(name).perform(context) -> values[name]."""
    return SimpleNamespace(values=values)


def _perform(recorded, context):
    return context.values[recorded.args[0]]


def _arguments(description) -> dict[str, Any]:
    return {a.args[0]: a.kwargs.get("default_value") for a in description.args[0] if type(a).__name__ == "DeclareLaunchArgument"}


@pytest.mark.parametrize("name", ["reconstruct.launch.py", "replay.launch.py"])
def test_launch_files_compile(name):
    source = (LAUNCH / name).read_text(encoding="utf-8")
    compile(ast.parse(source), name, "exec")
    assert "def generate_launch_description" in source


def test_reconstruct_launch(monkeypatch, tmp_path):
    module, created = _load_launch_file(LAUNCH / "reconstruct.launch.py", tmp_path, monkeypatch)
    description = module.generate_launch_description()
    args = _arguments(description)
    share = tmp_path / "ros2_lrm4d"
    assert args == {"params_file": str(share / "config" / "reconstruct.yaml"), "namespace": "", "use_sim_time": "false",
                    "rviz": "true", "log_level": "info"}
    rviz = [a for a in description.args[0] if type(a).__name__ == "Node"][0]
    assert rviz.kwargs["package"] == "rviz2" and rviz.kwargs["arguments"] == ["-d", str(share / "config" / "lrm4d.rviz")]
    assert type(rviz.kwargs["condition"]).__name__ == "IfCondition"

    opaque = [a for a in description.args[0] if type(a).__name__ == "OpaqueFunction"][0]
    module.LaunchConfiguration = type("LaunchConfiguration", (), {
        "__init__": lambda self, name: setattr(self, "args", (name,)), "perform": lambda self, ctx: _perform(self, ctx)})
    params_file = str(ROOT / "config" / "reconstruct.yaml")
    values = {"params_file": params_file, "namespace": "", "use_sim_time": "true", "log_level": "debug"}
    (node,) = opaque.kwargs["function"](_launch_context(values))
    kw = node.kwargs
    assert (kw["package"], kw["executable"], kw["name"]) == ("ros2_lrm4d", "lrm4d_node", "lrm4d")
    assert "namespace" not in kw and kw["parameters"] == [params_file, {"use_sim_time": True}]
    assert kw["ros_arguments"] == ["--log-level", "debug"] and kw["output"] == "screen" and kw["emulate_tty"] is True

    # Under a namespace, the `lrm4d:` section is re-keyed so that /robot1/lrm4d still gets it.
    (node,) = opaque.kwargs["function"](_launch_context({**values, "namespace": "robot1"}))
    assert node.kwargs["namespace"] == "robot1"
    rewritten = yaml.safe_load(Path(node.kwargs["parameters"][0]).read_text(encoding="utf-8"))
    original = yaml.safe_load(Path(params_file).read_text(encoding="utf-8"))
    assert rewritten == {"/**/lrm4d": original["lrm4d"]}
    os.unlink(node.kwargs["parameters"][0])


def test_replay_launch(monkeypatch, tmp_path):
    module, created = _load_launch_file(LAUNCH / "replay.launch.py", tmp_path, monkeypatch)
    description = module.generate_launch_description()
    args = _arguments(description)
    assert {"bag", "rate", "loop", "params_file", "namespace", "rviz", "log_level"} <= set(args) and args["bag"] is None
    include = [a for a in description.args[0] if type(a).__name__ == "IncludeLaunchDescription"][0]
    source = include.args[0]
    assert source.args[0] == str(tmp_path / "ros2_lrm4d" / "launch" / "reconstruct.launch.py")
    assert dict(include.kwargs["launch_arguments"])["use_sim_time"] == "true"
    assert module.bag_play_command("/bags/x", "0.5", False) == ["ros2", "bag", "play", "/bags/x", "--clock", "--rate", "0.5"]
    assert module.bag_play_command("/bags/x", "2", True)[-1] == "--loop"
    assert args["player"] == "ros2bag"

    class Context:  # what LaunchConfiguration(...).perform(context) reads, in the recording stand-in
        values = {"bag": "/bags/x", "rate": "0.5", "loop": "true", "start_delay": "2.0", "player": "lrm4d"}

    module.LaunchConfiguration = lambda name: SimpleNamespace(perform=lambda context: Context.values[name])
    player, = module._bag_play(Context)
    assert type(player).__name__ == "Node" and player.kwargs["executable"] == "lrm4d_bag_player"
    assert player.kwargs["parameters"] == [{"bag": "/bags/x", "rate": 0.5, "loop": True, "publish_clock": True,
                                            "start_delay_s": 2.0, "wait_for_subscribers_s": 60.0}]
    Context.values["player"] = "ros2bag"
    timer, = module._bag_play(Context)
    assert timer.kwargs["period"] == 2.0 and timer.kwargs["actions"][0].kwargs["cmd"][:3] == ["ros2", "bag", "play"]


# ============================================================================ RViz config
def test_rviz_config_is_valid_yaml_with_the_outputs():
    config = yaml.safe_load((ROOT / "config" / "lrm4d.rviz").read_text(encoding="utf-8"))
    manager = config["Visualization Manager"]
    assert manager["Global Options"]["Fixed Frame"] == "map"
    displays = {d["Class"]: d for d in manager["Displays"]}
    clouds = [d for d in manager["Displays"] if d["Class"] == "rviz_default_plugins/PointCloud2"]
    topics = {d["Topic"]["Value"]: d for d in clouds}
    assert topics["/lrm4d/gaussians"]["Color Transformer"] == "RGB8"
    assert topics["/lrm4d/gaussians/forecast_500ms"]["Color Transformer"] == "FlatColor"
    assert displays["rviz_default_plugins/Image"]["Topic"]["Value"] == "/lrm4d/predicted/front/image_raw"
    assert {"rviz_default_plugins/TF", "rviz_default_plugins/Grid"} <= set(displays)
    assert any(p["Class"] == "rviz_common/Displays" for p in config["Panels"])
    # The forecast topic is the one the node publishes for a 0.5 s horizon.
    from ros2_lrm4d.shell import Topics

    assert "/lrm4d/" + Topics.forecast(0.5) in topics


# ============================================================================ the real node (ROS 2)
@pytest.fixture
def ros():
    import rclpy

    rclpy.init()
    yield rclpy
    rclpy.try_shutdown()


@pytest.mark.ros
def test_ros_node_declares_parameters_and_outputs(ros):
    from rclpy.parameter import Parameter

    from ros2_lrm4d.node import ReconstructionNode

    node = ReconstructionNode(backend=SimpleNamespace(model_id="fake"), parameter_overrides=[
        Parameter("cameras", value=["a", "b"]), Parameter("update_rate_hz", value=4)])
    try:
        for decl in parameter_declarations():
            assert node.has_parameter(decl.name)
            assert node.describe_parameter(decl.name).description == decl.description
        assert node.params.cameras == ("a", "b") and node.params.update_rate_hz == 4.0
        topics = {p.topic_name for p in node.publishers}
        assert {"/lrm4d/gaussians", "/lrm4d/gaussians/forecast_500ms", "/lrm4d/gaussians/forecast_1000ms",
                "/lrm4d/gaussians_4d", "/diagnostics"} <= topics
        subscribed = {s.topic_name for s in node.subscriptions}
        assert {"/cameras/a/image_raw", "/cameras/a/camera_info", "/cameras/b/image_raw", "/cameras/b/camera_info"} <= subscribed
        result = node.set_parameters([Parameter("max_views", value=3)])[0]
        assert not result.successful and "restart" in result.reason
    finally:
        node.destroy_node()


@pytest.mark.ros
def test_ros_node_rejects_bad_parameters(ros):
    from rclpy.parameter import Parameter

    from ros2_lrm4d.node import ReconstructionNode, StartupError

    for override in (Parameter("image_transport", value="theora"), Parameter("queue_size", value="ten")):
        with pytest.raises(StartupError) as info:
            ReconstructionNode(backend=SimpleNamespace(model_id="fake"), parameter_overrides=[override])
        assert info.value.exit_code == 2 and override.name in str(info.value)


@pytest.mark.ros
def test_ros_main_returns_2_for_bad_parameters():
    from ros2_lrm4d.node import main

    assert main(["lrm4d_node", "--ros-args", "-p", "image_transport:=theora"], restore_sigint=True) == 2


@pytest.mark.ros
def test_ros_node_end_to_end_with_a_dead_camera(ros):
    """Two cameras with static TF; the tiny model; outputs arrive, and keep arriving after 'b' dies."""
    from diagnostic_msgs.msg import DiagnosticArray
    from geometry_msgs.msg import TransformStamped
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.node import Node
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2
    from tf2_ros import StaticTransformBroadcaster

    from ros2_lrm4d.node import ReconstructionNode, qos_profile

    node = ReconstructionNode(parameter_overrides=[
        Parameter("cameras", value=["a", "b"]), Parameter("device", value="cpu"), Parameter("max_views", value=4),
        Parameter("render_max_side", value=16), Parameter("forecast_horizons_s", value=[0.5]),
        Parameter("update_rate_hz", value=2.0), Parameter("diagnostics_period_s", value=0.5)])
    source = Node("lrm4d_test_source")
    static = StaticTransformBroadcaster(source)
    transforms = []
    for i, cam in enumerate(("a", "b")):
        t = TransformStamped()
        t.header.frame_id, t.child_frame_id = "map", f"cam_{cam}"
        t.transform.translation.x = float(i)
        t.transform.rotation.w = 1.0
        transforms.append(t)
    static.sendTransform(transforms)
    qos = qos_profile("sensor_data", 5)
    pubs = {cam: (source.create_publisher(Image, f"/cameras/{cam}/image_raw", qos),
                  source.create_publisher(CameraInfo, f"/cameras/{cam}/camera_info", qos)) for cam in ("a", "b")}
    alive = {"a": True, "b": True}

    def tick():
        stamp = source.get_clock().now().to_msg()
        for cam, (image_pub, info_pub) in pubs.items():
            if not alive[cam]:
                continue
            image = Image(height=H, width=W, encoding="rgb8", step=3 * W, data=bytes(H * W * 3))
            image.header.stamp, image.header.frame_id = stamp, f"cam_{cam}"
            info = CameraInfo(height=H, width=W, distortion_model="plumb_bob", d=[0.0] * 5,
                              k=K.reshape(-1).tolist(), r=np.eye(3).reshape(-1).tolist(),
                              p=np.hstack([K, np.zeros((3, 1))]).reshape(-1).tolist())
            info.header = image.header
            image_pub.publish(image)
            info_pub.publish(info)

    source.create_timer(0.1, tick)
    clouds, diagnostics = [], []
    source.create_subscription(PointCloud2, "/lrm4d/gaussians", clouds.append, 10)
    source.create_subscription(DiagnosticArray, "/diagnostics", diagnostics.append, 10)
    executor = MultiThreadedExecutor()
    executor.add_node(node)
    executor.add_node(source)

    def spin_until(condition, timeout_s):
        deadline = time.monotonic() + timeout_s
        while not condition() and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.1)
        return condition()

    try:
        assert spin_until(lambda: clouds, 120), "no /lrm4d/gaussians within 120 s"
        assert clouds[-1].header.frame_id == "map" and clouds[-1].width > 0
        alive["b"] = False
        n = len(clouds)
        assert spin_until(lambda: any("stalled cameras: b" in d.status[0].message for d in diagnostics), 30)
        assert spin_until(lambda: len(clouds) > n + 1, 120), "output stopped after camera b died"
    finally:
        executor.shutdown()
        node.destroy_node()
        source.destroy_node()


def test_node_parameter_switches_the_own_view_splats(tmp_path):
    """`own_view_deg`: -1 keeps what the checkpoint records, 0 turns the splats off, an angle sets
    theirs and keeps their other constants; out-of-range values are refused."""
    import torch

    from lrm4d_core.io.checkpoint import save_checkpoint
    from lrm4d_core.model.config import preset
    from lrm4d_core.model.lrm4d import LRM4D
    from lrm4d_core.model.own_view import OwnViewConstants
    from ros2_lrm4d.backend import make_backend

    path = tmp_path / "m.safetensors"
    torch.manual_seed(0)
    recorded = OwnViewConstants(angle_deg=12.0, width=0.3)
    save_checkpoint(path, LRM4D(preset("tiny", image_size=(32, 32), own_view=recorded)))
    got = {v: make_backend(NodeParams(checkpoint=str(path), device="cpu", own_view_deg=v), offline=True).model.config.own_view
           for v in (-1, 0, 25.0)}
    assert got[-1] == recorded
    assert got[0] == OwnViewConstants(angle_deg=0.0, width=0.3)
    assert got[25.0] == OwnViewConstants(angle_deg=25.0, width=0.3)
    for bad in (-0.5, 120.0):
        with pytest.raises(ValueError, match="own_view_deg"):
            params_from_values({"own_view_deg": bad})
