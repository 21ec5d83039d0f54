"""Shell logic shared by the live node and the bag replay (no rclpy here).

- `FrameAssembler`: image + camera_info + TF -> `stream.Frame`, or a `FrameDropped` with a reason.
- `OutputEncoder`: `pipeline.Products` -> (topic, message) pairs, for rosbags or rclpy classes.
- `Diagnostics`: counters, input rates and latency -> diagnostic_msgs/DiagnosticArray.
- `RateLimitedLog`: bad input is logged clearly but never floods the log.

The node and the replay differ only in where messages come from and go to (DESIGN.md).
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict, deque
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from lrm4d_core.pipeline import Products
from lrm4d_core.stream import Frame
from lrm4d_core.validate import ImplausibleInput, check_pose

from .convert import (
    ConversionError,
    ImageTooLarge,
    camera_info_to_intrinsics,
    compressed_to_rgb,
    gaussians4d_to_msg,
    gaussians_to_pointcloud2,
    image_to_rgb,
    stamp_to_ns,
    transform_stamped_msg,
    undistort,
)
from .msgdefs import MOVING_OBJECTS, MessageFactory
from .params import NodeParams, forecast_topic_suffix
from .tf import Extrapolation, LinkMissing, TfLookupError

__all__ = ["FrameDropped", "FrameAssembler", "OutputEncoder", "Diagnostics", "RateLimitedLog", "NODE_NAME"]

NODE_NAME = "lrm4d"
NS = 1_000_000_000


class RateLimitedLog:
    """At most one line per key per `period_s`, with the number suppressed in between."""

    def __init__(self, logger: Callable[[str], None], period_s: float = 5.0, clock: Callable[[], float] = time.monotonic):
        self.logger, self.period_s, self.clock = logger, period_s, clock
        self._last: dict[str, float] = {}
        self._suppressed: Counter[str] = Counter()

    def __call__(self, key: str, message: str) -> None:
        now = self.clock()
        last = self._last.get(key)
        if last is not None and now - last < self.period_s:
            self._suppressed[key] += 1
            return
        extra = f" ({self._suppressed.pop(key)} more like this suppressed)" if self._suppressed.get(key) else ""
        self._last[key] = now
        self.logger(message + extra)


class FrameDropped(Exception):
    """A camera frame that cannot be used; `reason` is the diagnostics counter key."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


TfLookup = Callable[[str, str, int], np.ndarray]  # (target, source, stamp_ns) -> T_target_source


class FrameAssembler:
    """Builds posed frames from raw messages. Keeps the newest CameraInfo of each camera."""

    def __init__(self, params: NodeParams) -> None:
        self.params = params
        self._intrinsics: dict[str, Any] = {}

    def update_camera_info(self, camera: str, msg: Any) -> None:
        try:
            self._intrinsics[camera] = (camera_info_to_intrinsics(msg), str(msg.header.frame_id))
        except ConversionError as err:
            self._intrinsics.pop(camera, None)
            raise FrameDropped("bad_camera_info", f"{camera}: {err}") from err

    def make_frame(self, camera: str, image_msg: Any, tf_lookup: TfLookup, info_msg: Any | None = None) -> Frame:
        """Decode, undistort and pose one image; raises FrameDropped (never anything else for bad input)."""
        if info_msg is not None:
            self.update_camera_info(camera, info_msg)
        if camera not in self._intrinsics:
            raise FrameDropped("no_camera_info", f"{camera}: no valid camera_info received yet")
        intrinsics, info_frame = self._intrinsics[camera]
        stamp = stamp_to_ns(image_msg.header.stamp)
        try:
            if self.params.image_transport == "compressed":
                rgb = compressed_to_rgb(image_msg, self.params.max_image_pixels)
            else:
                rgb = image_to_rgb(image_msg, self.params.max_image_pixels)
        except ConversionError as err:
            reason = ("unsupported_encoding" if "encoding" in type(err).__name__.lower()
                      else "image_too_large" if isinstance(err, ImageTooLarge) else "bad_image")
            raise FrameDropped(reason, f"{camera}: {err}") from err
        if rgb.shape[:2] != (intrinsics.height, intrinsics.width):
            raise FrameDropped(
                "size_mismatch",
                f"{camera}: image is {rgb.shape[1]}x{rgb.shape[0]} but camera_info says {intrinsics.width}x{intrinsics.height}",
            )
        try:
            rgb, K = undistort(rgb, intrinsics) if intrinsics.distorted else (rgb, intrinsics.K)
        except ConversionError as err:
            raise FrameDropped("unsupported_distortion", f"{camera}: {err}") from err
        optical_frame = str(image_msg.header.frame_id) or info_frame
        try:
            pose = tf_lookup(self.params.fixed_frame, optical_frame, stamp)
        except LinkMissing as err:
            raise FrameDropped("tf_missing", f"{camera}: {err}") from err
        except Extrapolation as err:
            raise FrameDropped("tf_extrapolation", f"{camera}: {err}") from err
        except TfLookupError as err:
            raise FrameDropped("tf_error", f"{camera}: {err}") from err
        try:
            check_pose(pose, f"transform {self.params.fixed_frame} <- {optical_frame}")
        except ImplausibleInput as err:
            raise FrameDropped("tf_absurd", f"{camera}: {err}") from None
        return Frame(camera, stamp, rgb, np.asarray(K, dtype=np.float64), pose)


@dataclass(frozen=True)
class Topics:
    """Output topics relative to the node namespace (the node's private names `~/...`); names that
    start with "/" are absolute (/tf, /diagnostics)."""

    gaussians: str = "gaussians"
    gaussians_4d: str = "gaussians_4d"
    dynamic: str = "gaussians/dynamic"
    motion_markers: str = "motion_markers"
    moving_objects: str = "moving_objects"
    tf: str = "/tf"
    diagnostics: str = "/diagnostics"

    @staticmethod
    def forecast(horizon_s: float) -> str:
        return f"gaussians/{forecast_topic_suffix(horizon_s)}"

    @staticmethod
    def predicted_image(name: str) -> str:
        return f"predicted/{_topic_token(name)}/image_raw"

    @staticmethod
    def predicted_info(name: str) -> str:
        return f"predicted/{_topic_token(name)}/camera_info"

    @staticmethod
    def predicted_depth(name: str) -> str:
        return f"predicted/{_topic_token(name)}/depth"

    @staticmethod
    def optical_frame(name: str) -> str:
        """The TF frame a predicted view was rendered from (published on /tf at its stamp)."""
        return f"{NODE_NAME}/{_topic_token(name)}_optical"


def _topic_token(name: str) -> str:
    """Render names like 'front@+0.50s' -> 'front_plus_500ms' (valid ROS topic token)."""
    if "@" in name:
        base, t = name.split("@", 1)
        seconds = float(t.rstrip("s"))
        name = f"{base}_{'plus' if seconds >= 0 else 'minus'}_{int(round(abs(seconds) * 1000))}ms"
    token = "".join(c if c.isalnum() or c == "_" else "_" for c in name)
    return token if token and not token[0].isdigit() else f"cam_{token}"


MARKER_ARROW_S = 0.5
"""Motion arrows point where a Gaussian moves in this many seconds."""


class OutputEncoder:
    """Products -> [(topic, message type, message)] (see the README's topic table for stamps and frames).

    Stamps: the clouds and markers at the window end (the newest source stamp); each forecast at the
    time it predicts (window end + horizon); each predicted view at the time it shows (window end +
    its time offset), in a frame of its own (`Topics.optical_frame`) whose pose goes out on /tf with
    the same stamp, so that RViz and image_geometry can place it.
    """

    def __init__(self, params: NodeParams, factory: MessageFactory, model_id: str) -> None:
        self.params, self.factory, self.model_id = params, factory, model_id
        self.topics = Topics()

    def output_topics(self) -> list[tuple[str, str]]:
        """(relative topic, type) of every fixed output, for declaring publishers / bag connections.
        Predicted-view topics depend on camera names and are listed by `predicted_topics()`."""
        out = [(self.topics.gaussians, "sensor_msgs/msg/PointCloud2"), (self.topics.dynamic, "sensor_msgs/msg/PointCloud2"),
               (self.topics.motion_markers, "visualization_msgs/msg/MarkerArray"),
               (self.topics.moving_objects, MOVING_OBJECTS)]
        out += [(Topics.forecast(h), "sensor_msgs/msg/PointCloud2") for h in self.params.forecast_horizons_s]
        if self.params.publish_gaussians_4d:
            out.append((self.topics.gaussians_4d, "ros2_lrm4d/msg/GaussianCloud4D"))
        return out

    def predicted_topics(self, name: str) -> list[tuple[str, str]]:
        return [(Topics.predicted_image(name), "sensor_msgs/msg/Image"),
                (Topics.predicted_info(name), "sensor_msgs/msg/CameraInfo"),
                (Topics.predicted_depth(name), "sensor_msgs/msg/Image")]

    def encode(self, products: Products, with_4d: bool | None = None) -> list[tuple[str, str, Any]]:
        f, p = self.factory, self.params
        stamp = products.window.end_ns
        frame = p.fixed_frame
        out = [(self.topics.gaussians, "sensor_msgs/msg/PointCloud2", gaussians_to_pointcloud2(products.cloud, frame, stamp, f))]
        for h, cloud in products.forecasts.items():
            out.append((Topics.forecast(h), "sensor_msgs/msg/PointCloud2",
                        gaussians_to_pointcloud2(cloud, frame, stamp + int(round(h * NS)), f)))
        out.append((self.topics.dynamic, "sensor_msgs/msg/PointCloud2", gaussians_to_pointcloud2(products.dynamic, frame, stamp, f)))
        out.append((self.topics.motion_markers, "visualization_msgs/msg/MarkerArray", self.motion_markers(products, stamp)))
        out.append((self.topics.moving_objects, MOVING_OBJECTS, self.moving_objects(products, stamp)))
        if p.publish_gaussians_4d if with_4d is None else with_4d:
            msg = gaussians4d_to_msg(products.gaussians4d, frame, products.window.start_ns, stamp, self.model_id, f)
            out.append((self.topics.gaussians_4d, "ros2_lrm4d/msg/GaussianCloud4D", msg))
        transforms = []
        for view in products.renders:
            h, w = view.image.shape[:2]
            view_stamp = stamp + int(round(view.t * NS))
            optical = Topics.optical_frame(view.name)
            transforms.append(transform_stamped_msg(f, frame, optical, view_stamp, view.cam_to_world))
            image = f.make("sensor_msgs/msg/Image", header=f.header(optical, view_stamp), height=h, width=w,
                           encoding="rgb8", is_bigendian=0, step=3 * w, data=view.image.reshape(-1))
            info = camera_info_msg(f, optical, view_stamp, view.K, w, h)
            out.append((Topics.predicted_image(view.name), "sensor_msgs/msg/Image", image))
            out.append((Topics.predicted_info(view.name), "sensor_msgs/msg/CameraInfo", info))
            if view.depth is not None:
                depth = np.ascontiguousarray(view.depth, dtype="<f4")
                out.append((Topics.predicted_depth(view.name), "sensor_msgs/msg/Image",
                            f.make("sensor_msgs/msg/Image", header=f.header(optical, view_stamp), height=h, width=w,
                                   encoding="32FC1", is_bigendian=0, step=4 * w, data=depth.view(np.uint8).reshape(-1))))
        if transforms:
            out.append((self.topics.tf, "tf2_msgs/msg/TFMessage", f.make("tf2_msgs/msg/TFMessage", transforms=transforms)))
        return out

    def moving_objects(self, products: Products, stamp: int) -> Any:
        """The window's moving objects (`Products.objects`) as flat arrays (msg/MovingObjects.msg)."""
        objects = products.objects
        f = self.factory

        def flat(key: str, dtype) -> np.ndarray:
            return np.asarray([getattr(o, key) for o in objects], dtype=dtype).reshape(-1)

        return f.make(MOVING_OBJECTS, header=f.header(self.params.fixed_frame, stamp), model_id=self.model_id,
                      count=len(objects), center=flat("center", np.float32), size=flat("size", np.float32),
                      velocity=flat("velocity", np.float32), gaussians=flat("count", np.uint32),
                      weight=flat("weight", np.float32))

    def motion_markers(self, products: Products, stamp: int) -> Any:
        """One arrow per occupied voxel of the moving Gaussians (the heaviest `max_motion_markers`),
        from its mean position to where it is `MARKER_ARROW_S` later, after a DELETEALL: RViz shows
        only the newest window's arrows."""
        from lrm4d_core.motion import voxel_motion

        f, p = self.factory, self.params
        centres, velocities, _ = voxel_motion(products.dynamic, p.motion_voxel_m, p.max_motion_markers)
        zero = f.make("geometry_msgs/msg/Point", x=0.0, y=0.0, z=0.0)
        markers = [self._marker(stamp, 0, 3, [], zero)]  # DELETEALL
        for i, (c, v) in enumerate(zip(centres, velocities)):
            tip = c + v * MARKER_ARROW_S
            points = [f.make("geometry_msgs/msg/Point", x=float(a[0]), y=float(a[1]), z=float(a[2])) for a in (c, tip)]
            markers.append(self._marker(stamp, i, 0, points, zero))
        return f.make("visualization_msgs/msg/MarkerArray", markers=markers)

    def _marker(self, stamp: int, index: int, action: int, points: list, zero: Any) -> Any:
        f, p = self.factory, self.params
        return f.make(
            "visualization_msgs/msg/Marker", header=f.header(p.fixed_frame, stamp), ns="lrm4d_motion", id=index,
            type=0, action=action,  # ARROW; ADD (0) or DELETEALL (3)
            pose=f.make("geometry_msgs/msg/Pose", position=zero,
                        orientation=f.make("geometry_msgs/msg/Quaternion", x=0.0, y=0.0, z=0.0, w=1.0)),
            scale=f.make("geometry_msgs/msg/Vector3", x=0.04, y=0.08, z=0.08),
            color=f.make("std_msgs/msg/ColorRGBA", r=1.0, g=0.4, b=0.0, a=1.0),
            lifetime=f.make("builtin_interfaces/msg/Duration", sec=0, nanosec=0), frame_locked=False,
            points=points, colors=[], texture_resource="",
            texture=f.make("sensor_msgs/msg/CompressedImage", header=f.header("", 0), format="", data=np.zeros(0, np.uint8)),
            uv_coordinates=[], text="",
            mesh_resource="", mesh_file=f.make("visualization_msgs/msg/MeshFile", filename="", data=np.zeros(0, np.uint8)),
            mesh_use_embedded_materials=False,
        )


def camera_info_msg(f: MessageFactory, frame_id: str, stamp_ns: int, K: np.ndarray, width: int, height: int) -> Any:
    """An undistorted pinhole CameraInfo for K."""
    K = np.asarray(K, dtype=np.float64)
    P = np.zeros((3, 4))
    P[:, :3] = K
    return f.make(
        "sensor_msgs/msg/CameraInfo", header=f.header(frame_id, stamp_ns), height=height, width=width,
        distortion_model="plumb_bob", d=np.zeros(5), k=K.reshape(-1), r=np.eye(3).reshape(-1), p=P.reshape(-1),
        binning_x=0, binning_y=0,
        roi=f.make("sensor_msgs/msg/RegionOfInterest", x_offset=0, y_offset=0, height=0, width=0, do_rectify=False),
    )


class Diagnostics:
    """Counters and rates for /diagnostics. Time is passed in (bag time in replay, node clock live)."""

    def __init__(self, rate_window_s: float = 5.0) -> None:
        self.counters: Counter[str] = Counter()
        self.drops: Counter[str] = Counter()
        self._arrivals: dict[str, deque[int]] = defaultdict(deque)
        self._first: dict[str, int] = {}  # first arrival per camera
        self._latencies: deque[float] = deque(maxlen=50)
        self._stages: dict[str, deque[float]] = defaultdict(lambda: deque(maxlen=50))
        self.window_ns = int(rate_window_s * NS)
        self.backend_status = "ok"
        # Shell-specific entries: `extra` key/values are reported as they are; each `warnings` entry
        # (e.g. the live node's stalled cameras) makes the status WARN and is added to its message.
        self.extra: dict[str, str] = {}
        self.warnings: dict[str, str] = {}

    def update_backend(self, backend: Any, error: BaseException | None = None) -> None:
        """Backend health after a window: "ok", "failing (<error type>)", and for backends that report
        on themselves (the remote one: `status`, `counters`) their account, e.g. circuit open and
        answering from the local fallback, with counters as `backend/<name>` entries."""
        own = getattr(backend, "status", "ok")
        if error is not None:
            self.backend_status = f"failing ({type(error).__name__})" + ("" if own == "ok" else f": {own}")
        else:
            self.backend_status = own
        for key, value in dict(getattr(backend, "counters", {})).items():
            self.extra[f"backend/{key}"] = str(value)

    def frame_received(self, camera: str, now_ns: int) -> None:
        self.counters["frames_in"] += 1
        q = self._arrivals[camera]
        q.append(now_ns)
        self._first.setdefault(camera, now_ns)
        while q and q[0] < now_ns - self.window_ns:
            q.popleft()

    def frame_dropped(self, reason: str, count: int = 1) -> None:
        self.drops[reason] += count

    def window_done(self, products: Products, latency_s: float) -> None:
        self.counters["windows"] += 1
        self._latencies.append(latency_s)
        for k, v in products.timings.items():
            self._stages[k].append(v)
        for k, v in getattr(products, "counters", {}).items():  # pipeline counters (empty clouds, pruned points)
            if k != "windows":
                self.counters[f"pipeline/{k}"] = v
        renders = getattr(products, "renders", None)
        if renders is not None:  # a live node renders only the watched views: say which
            self.extra["predicted_views"] = ", ".join(r.name for r in renders) or "none"

    def rates(self, now_ns: int) -> dict[str, float]:
        """Frames per second per camera over the last `rate_window_s`; while a camera has delivered
        for less than that, over the time it has delivered (so a fresh 10 Hz stream reads 10, not 2)."""
        out = {}
        for camera, q in self._arrivals.items():
            recent = [t for t in q if t >= now_ns - self.window_ns]
            if self._first[camera] >= now_ns - self.window_ns:
                span = (recent[-1] - recent[0]) / NS if len(recent) > 1 else 0.0
                out[camera] = (len(recent) - 1) / span if span > 0 else 0.0
            else:
                out[camera] = len(recent) / (self.window_ns / NS)
        return out

    def mean_latency(self) -> float:
        return float(np.mean(self._latencies)) if self._latencies else float("nan")

    def key_values(self, now_ns: int) -> list[tuple[str, str]]:
        kv = [(f"input_rate_hz/{c}", f"{r:.2f}") for c, r in sorted(self.rates(now_ns).items())]
        kv += [(k, str(v)) for k, v in sorted(self.counters.items())]
        kv += [(f"dropped/{k}", str(v)) for k, v in sorted(self.drops.items())]
        last = self._latencies[-1] if self._latencies else float("nan")
        kv.append(("window_latency_s", f"{last:.4f}"))  # the latest window: a slow one shows at once
        kv.append(("window_latency_mean_s", f"{self.mean_latency():.4f}"))  # over the last 50 windows
        kv += [(f"stage_s/{k}", f"{v[-1]:.4f}") for k, v in sorted(self._stages.items())]
        kv += [(f"stage_mean_s/{k}", f"{np.mean(v):.4f}") for k, v in sorted(self._stages.items())]
        kv += sorted(self.extra.items())
        kv.append(("backend", self.backend_status))
        kv.append(("gpu_memory_mib", _gpu_memory()))
        return kv

    def to_msg(self, f: MessageFactory, now_ns: int, hardware_id: str = NODE_NAME) -> Any:
        level = 0 if self.backend_status == "ok" else 1
        if self.counters["windows"] == 0 and self.counters["frames_in"] > 0 and sum(self.drops.values()) >= self.counters["frames_in"]:
            level = 1  # frames arrive but all are dropped
        if self.warnings:
            level = max(level, 1)
        message = "reconstructing" if level == 0 else f"degraded: backend {self.backend_status}, drops {dict(self.drops)}"
        message += "".join(f"; {w}" for _, w in sorted(self.warnings.items()))
        values = [f.make("diagnostic_msgs/msg/KeyValue", key=k, value=v) for k, v in self.key_values(now_ns)]
        status = f.make("diagnostic_msgs/msg/DiagnosticStatus", level=level,
                        name=f"{NODE_NAME}: reconstruction", message=message, hardware_id=hardware_id, values=values)
        return f.make("diagnostic_msgs/msg/DiagnosticArray", header=f.header("", now_ns), status=[status])


def _gpu_memory() -> str:
    try:
        import torch

        if torch.cuda.is_available():
            return f"{torch.cuda.memory_allocated() / 2**20:.0f}"
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    return "n/a"
