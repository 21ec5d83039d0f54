"""Every parameter of the reconstruction node, declared once, used by both shells.

The live node declares these with rclpy (descriptions become ROS parameter descriptors); the replay
reads the same YAML file (`config/reconstruct.yaml`, ROS's `<node>: ros__parameters:` layout) with
no ROS installed. Both turn them into the same core configs with `window_config()` and
`pipeline_config()`, so a bag replay and the live node behave alike.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping

from lrm4d_core.argtypes import parse_color
from lrm4d_core.pipeline import PipelineConfig, VirtualCamera
from lrm4d_core.stream import WindowConfig

__all__ = ["NodeParams", "PARAM_DOCS", "PRIOR_OVERRIDES", "PriorOverride", "ParamDeclaration", "parameter_declarations",
           "params_from_values", "load_params_file", "forecast_topic_suffix"]


@dataclass(frozen=True)
class PriorOverride:
    """A node parameter that overrides one constant of a no-learning prior a checkpoint records
    (`lrm4d_core.model.prior.PriorConstants`): -1 keeps the checkpoint's, 0 turns the prior off,
    a value in (0, `upper`] (no bound: None) sets that constant and keeps the prior's others."""

    prior: str
    key: str
    meaning: str
    upper: float | None


# One entry per prior the node can switch without a new checkpoint (the local backend applies them).
PRIOR_OVERRIDES: dict[str, PriorOverride] = {
    "motion_prior_radius": PriorOverride("motion", "radius", "a radius in pixels", None),
    "view_align_search": PriorOverride("align", "search", "a log-scale range", 1.0),
    "stereo_search": PriorOverride("stereo", "search", "a log-scale range", 2.0),
    "time_carve_width": PriorOverride("carve", "width", "a width", 2.0),
    "thickness_depth": PriorOverride("thickness", "depth", "a depth in half-depths", 3.0),
}


@dataclass(frozen=True)
class NodeParams:
    """Node parameters with their defaults. Lists are ROS arrays; 0 or "" mean 'unset' where noted."""

    cameras: tuple[str, ...] = ("front",)
    image_topic_pattern: str = "/cameras/{camera}/image_raw"
    camera_info_topic_pattern: str = "/cameras/{camera}/camera_info"
    image_transport: str = "raw"
    queue_size: int = 10
    sync_slop_s: float = 0.02
    fixed_frame: str = "map"
    tf_wait_s: float = 0.2
    window_duration_s: float = 2.0
    window_max_steps: int = 0
    update_rate_hz: float = 2.0
    max_views: int = 12
    view_selection: str = "round_robin"
    min_steps: int = 2
    jump_back_s: float = 5.0
    scene_center: tuple[float, ...] = (0.0, 0.0, 0.0)
    scene_scale: float = 0.0
    use_ground_plane: bool = True
    ground_z: float = 0.0
    backend: str = "local"
    checkpoint: str = ""
    motion_prior_radius: int = -1
    view_align_search: float = -1.0
    stereo_search: float = -1.0
    time_carve_width: float = -1.0
    thickness_depth: float = -1.0
    own_view_deg: float = -1.0
    device: str = "auto"
    remote_address: str = "localhost:50051"
    remote_token_file: str = ""
    remote_timeout_s: float = 5.0
    fallback_to_local: bool = False
    remote_image_encoding: str = "jpeg"
    remote_tls_ca_file: str = ""
    forecast_horizons_s: tuple[float, ...] = (0.5, 1.0)
    max_points: int = 100_000
    inference_filter: bool = True
    render_inputs_at_s: tuple[float, ...] = (0.0,)
    render_max_side: int = 256
    virtual_cameras_json: str = "[]"
    publish_gaussians_4d: bool = True
    predicted_views_on_demand: bool = True
    input_qos: str = "sensor_data"
    output_qos: str = "reliable"
    qos_depth: int = 5
    diagnostics_period_s: float = 1.0
    background: str = ""
    max_image_pixels: int = 8_388_608
    dynamic_speed_threshold: float = 0.3
    motion_voxel_m: float = 0.25
    max_motion_markers: int = 200

    def __post_init__(self) -> None:
        for name in ("cameras", "scene_center", "forecast_horizons_s", "render_inputs_at_s"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        problems = []
        if not self.cameras:
            problems.append("cameras: name at least one camera")
        if self.image_transport not in ("raw", "compressed"):
            problems.append(f"image_transport must be 'raw' or 'compressed', got {self.image_transport!r}")
        if self.backend not in ("local", "remote"):
            problems.append(f"backend must be 'local' or 'remote', got {self.backend!r}")
        if self.remote_image_encoding not in ("raw", "jpeg", "png"):
            problems.append(f"remote_image_encoding must be 'raw', 'jpeg' or 'png', got {self.remote_image_encoding!r}")
        if self.remote_timeout_s <= 0:
            problems.append("remote_timeout_s must be > 0")
        for q in ("input_qos", "output_qos"):
            if getattr(self, q) not in ("sensor_data", "reliable"):
                problems.append(f"{q} must be 'sensor_data' or 'reliable', got {getattr(self, q)!r}")
        if len(self.scene_center) != 3 or self.scene_scale < 0:
            problems.append("scene_center needs 3 values and scene_scale must be >= 0 (0 = estimate per window)")
        if not math.isfinite(self.ground_z):
            problems.append("ground_z must be finite (use_ground_plane: false when the ground is unknown)")
        if self.update_rate_hz <= 0:
            problems.append("update_rate_hz must be > 0")
        if self.diagnostics_period_s <= 0:
            problems.append("diagnostics_period_s must be > 0")
        if self.max_image_pixels < 1:
            problems.append("max_image_pixels must be >= 1")
        for name, override in PRIOR_OVERRIDES.items():
            value = getattr(self, name)
            if not (value == -1 or 0 <= value <= (math.inf if override.upper is None else override.upper)):
                bound = "" if override.upper is None else f" in (0, {override.upper:g}]"
                problems.append(f"{name} must be -1 (the checkpoint's), 0 (off) or {override.meaning}{bound}")
        if not (self.own_view_deg == -1 or 0 <= self.own_view_deg <= 90):
            problems.append("own_view_deg must be -1 (the checkpoint's), 0 (off) or an angle in (0, 90] degrees")
        if self.dynamic_speed_threshold < 0 or self.motion_voxel_m <= 0 or self.max_motion_markers < 0:
            problems.append("need dynamic_speed_threshold >= 0, motion_voxel_m > 0 and max_motion_markers >= 0")
        if self.queue_size < 1 or self.qos_depth < 1:
            problems.append("queue_size and qos_depth must be >= 1")
        if self.sync_slop_s < 0 or self.tf_wait_s < 0:
            problems.append("sync_slop_s and tf_wait_s must be >= 0")
        if self.background:
            try:
                parse_color(self.background)
            except (ValueError, argparse.ArgumentTypeError) as err:
                problems.append(f"background: {err}")
        if problems:
            raise ValueError("invalid lrm4d parameters: " + "; ".join(problems))

    # ------------------------------------------------------------------ topics
    def prior_overrides(self) -> dict[str, dict[str, float]]:
        """The `prior` overrides for `load_model` (`PRIOR_OVERRIDES`): {prior: {constant: value}} for
        each such parameter that is not -1."""
        return {o.prior: {o.key: getattr(self, name)} for name, o in PRIOR_OVERRIDES.items() if getattr(self, name) >= 0}

    def image_topic(self, camera: str) -> str:
        topic = self.image_topic_pattern.format(camera=camera)
        return topic + "/compressed" if self.image_transport == "compressed" else topic

    def camera_info_topic(self, camera: str) -> str:
        return self.camera_info_topic_pattern.format(camera=camera)

    # ------------------------------------------------------------------ core configs
    def window_config(self) -> WindowConfig:
        return WindowConfig(
            duration_s=self.window_duration_s if self.window_duration_s > 0 else None,
            max_steps=self.window_max_steps or None,
            update_period_s=1.0 / self.update_rate_hz,
            max_views=self.max_views,
            selection=self.view_selection,  # type: ignore[arg-type]
            jump_back_s=self.jump_back_s,
            min_steps=self.min_steps,
        )

    def virtual_cameras(self) -> tuple[VirtualCamera, ...]:
        try:
            items = json.loads(self.virtual_cameras_json)
            return tuple(VirtualCamera(**{**v, "cam_to_world": tuple(map(tuple, v.get("cam_to_world", VirtualCamera.cam_to_world)))})
                         for v in items)
        except (TypeError, ValueError, KeyError) as err:
            raise ValueError(f"virtual_cameras_json is not a list of virtual cameras: {err}") from err

    def pipeline_config(self) -> PipelineConfig:
        return PipelineConfig(
            forecast_horizons_s=self.forecast_horizons_s,
            max_points=self.max_points,
            inference_filter=self.inference_filter,
            render_inputs_at_s=self.render_inputs_at_s,
            virtual_cameras=self.virtual_cameras(),
            render_max_side=self.render_max_side,
            scene_center=tuple(self.scene_center) if self.scene_scale > 0 else None,  # type: ignore[arg-type]
            scene_scale=self.scene_scale if self.scene_scale > 0 else None,
            background=parse_color(self.background) if self.background else None,
            dynamic_speed_threshold=self.dynamic_speed_threshold,
            ground_z=self.ground_z if self.use_ground_plane else None,
        )

    @staticmethod
    def from_dict(values: dict[str, Any]) -> NodeParams:
        known = {f.name for f in fields(NodeParams)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown lrm4d parameters {unknown}; known: {sorted(known)}")
        return NodeParams(**values)


PARAM_DOCS: dict[str, str] = {
    "cameras": "camera names; each has an image and a camera_info topic from the patterns",
    "image_topic_pattern": "image topic, {camera} is replaced by the camera name",
    "camera_info_topic_pattern": "camera_info topic, {camera} is replaced by the camera name",
    "image_transport": "raw (sensor_msgs/Image) or compressed (CompressedImage on <topic>/compressed)",
    "queue_size": "message_filters queue size per subscription",
    "sync_slop_s": "ApproximateTimeSynchronizer slop: max stamp difference within one group (s)",
    "fixed_frame": "TF frame the Gaussians are published in (e.g. map or odom)",
    "tf_wait_s": "replay: how long after an image stamp TF may still arrive before the frame is dropped",
    "window_duration_s": "sliding window length (s); 0 = bounded by window_max_steps only",
    "window_max_steps": "max time steps in the window; 0 = bounded by duration only",
    "update_rate_hz": "reconstructions per second of sensor time",
    "max_views": "max images per reconstruction (the model's budget)",
    "view_selection": "round_robin (cycle cameras over time), all, or latest",
    "min_steps": "time steps needed before the first reconstruction",
    "jump_back_s": "a stamp this far behind the newest resets the window (looping bag, restarted clock); so do two steps in a row before the window's start, and three rising steps in a row behind the newest (a bag shorter than the window looping)",
    "scene_center": "fixed model-box centre in fixed_frame [x, y, z] (used when scene_scale > 0)",
    "scene_scale": "fixed metres per model unit; 0 = estimate centre and scale per window from the cameras",
    "use_ground_plane": "the ground is the plane z = ground_z of fixed_frame (z up, REP 105); what the model sees near it is put on it (false: nothing assumed)",
    "ground_z": "height of the ground in fixed_frame (m), used with use_ground_plane",
    "backend": "local (model in this process) or remote (lrm4d serve)",
    "checkpoint": "model checkpoint (.safetensors); empty = the embedded default",
    "motion_prior_radius": "local backend: search radius (model pixels) of the model's block-matching motion prior; -1 = the checkpoint's (the embedded default: 8), 0 = off (saves its cost on static rigs)",
    "view_align_search": "local backend: log-scale range over which each input view's depths are fitted to the other views' silhouettes (object-centric rigs with a plain background); -1 = the checkpoint's (the embedded default: 0.3), 0 = off (e.g. an inward rig whose background has the model's background colour but is not empty)",
    "stereo_search": "local backend: log-scale range of the plane sweep that corrects the depths of textured input views (no plain background) where other inputs see the same patch, and keeps what it matched visible over the window (static); and, where the checkpoint sets prior.stereo.plain_search (the embedded default does not), plain-background views the silhouette alignment left alone; -1 = the checkpoint's (the embedded default: 0.7), 0 = off, both (e.g. to save its cost on a slow CPU)",
    "time_carve_width": "local backend: a Gaussian that another input, at another time, sees through (or, from nearly the same viewpoint, sees in another colour) fades out before that time: its temporal scale is at most this times its distance in time to that input; -1 = the checkpoint's (the embedded default: 0.5), 0 = off",
    "thickness_depth": "local backend: a subject before a plain background that no crossing camera placed gets a body behind what its inputs saw: its Gaussians are stretched along their rays by this many half-depths (the silhouette's width at each pixel), cut where another input near in time sees background; -1 = the checkpoint's (the embedded default: 0.7), 0 = off (e.g. thin flat things filmed from one side)",
    "own_view_deg": "local backend: rendered views (the predicted images) show, near each input camera and its time, that input's own pixels as small splats at the model's depths, the pixel's Gaussians giving way to them, within about this many degrees of the input camera; -1 = the checkpoint's (the embedded default: 10), 0 = off (published clouds never include them; off saves 10-20% of the predicted views' time)",
    "device": "auto, cpu, cuda or cuda:N (local backend)",
    "remote_address": "host:port of lrm4d serve (remote backend)",
    "remote_token_file": "file holding the bearer token for the remote backend",
    "remote_timeout_s": "deadline per remote call (s)",
    "fallback_to_local": "use the local backend while the remote one is down",
    "remote_image_encoding": "how images travel to the remote backend: jpeg (smallest), png or raw (lossless)",
    "remote_tls_ca_file": "CA certificate (PEM) to verify the remote server with TLS; empty = plain TCP",
    "forecast_horizons_s": "horizons beyond the newest stamp for ~/gaussians/forecast_<ms>ms (s)",
    "max_points": "max Gaussians per published cloud (largest opacity kept)",
    "inference_filter": "drop Gaussians with p(t) < 0.05 or p(t)*opacity < 0.05 (SPEC)",
    "render_inputs_at_s": "times after the newest stamp at which every input camera is predicted (s)",
    "render_max_side": "longer side of predicted images (pixels)",
    "virtual_cameras_json": "JSON list of extra cameras: name, width, height, fx, fy, cx, cy, cam_to_world (4x4), follow",
    "publish_gaussians_4d": "publish the full 4D set on ~/gaussians_4d (costly on CPU)",
    "predicted_views_on_demand": "render a predicted view only while one of its topics has a subscriber (RViz, ros2 bag record); false: every view, every window",
    "input_qos": "sensor_data (best effort, volatile) or reliable, for image/camera_info subscriptions",
    "output_qos": "reliable or sensor_data, for published outputs",
    "qos_depth": "history depth of the QoS profiles",
    "diagnostics_period_s": "period of /diagnostics messages (s)",
    "background": "colour behind predicted views: white, black, gray or R,G,B; empty = the model's own (its sky/environment map, or the colour it was trained on)",
    "max_image_pixels": "images with more pixels are dropped (image_too_large) before decoding; bounds memory: about cameras x rate x window_duration_s x this x 3 bytes",
    "dynamic_speed_threshold": "Gaussians faster than this (m/s) are the moving part: ~/gaussians/dynamic, ~/motion_markers",
    "motion_voxel_m": "~/motion_markers: one arrow per occupied voxel of this side (m) of the moving Gaussians",
    "max_motion_markers": "~/motion_markers: at most this many arrows (the heaviest voxels), so RViz stays fluid",
}


# ROS parameter type of each field annotation (the annotations are strings: `from __future__ import annotations`).
_ROS_TYPES: dict[str, str] = {
    "bool": "bool",
    "int": "integer",
    "float": "double",
    "str": "string",
    "tuple[str, ...]": "string_array",
    "tuple[int, ...]": "integer_array",
    "tuple[float, ...]": "double_array",
}


@dataclass(frozen=True)
class ParamDeclaration:
    """One ROS parameter of the node: name, default in a ROS-typed form, description, ROS type name.

    `default` is what `Node.declare_parameter` gets: a list for arrays (never empty: rclpy infers the
    type from the default's elements), floats for doubles. `ros_type` is the ParameterType name in
    lower case ("double_array", ...).
    """

    name: str
    default: Any
    description: str
    ros_type: str


def parameter_declarations() -> list[ParamDeclaration]:
    """Every NodeParams field as a ROS parameter declaration, in field order (no rclpy needed)."""
    defaults = NodeParams()
    out = []
    for f in fields(NodeParams):
        ros_type = _ROS_TYPES.get(str(f.type))
        if ros_type is None:
            raise TypeError(f"NodeParams.{f.name}: annotation {f.type!r} has no ROS parameter type")
        default = _coerce(f.name, ros_type, getattr(defaults, f.name))
        if ros_type.endswith("_array") and not default:
            raise ValueError(f"NodeParams.{f.name}: an empty list default cannot be declared (rclpy infers the type from it)")
        out.append(ParamDeclaration(f.name, default, PARAM_DOCS[f.name], ros_type))
    return out


def _coerce(name: str, ros_type: str, value: Any) -> Any:
    """A parameter value as `ros_type` wants it; integers are accepted for doubles (YAML `10` for 10.0).

    Raises ValueError naming the parameter, the expected type and the value given.
    """
    def bad() -> ValueError:
        return ValueError(f"parameter {name!r} must be of type {ros_type}, got {value!r} ({type(value).__name__})")

    def scalar(kind: str, v: Any) -> Any:
        if kind == "bool":
            if isinstance(v, bool):
                return v
        elif kind == "integer":
            if isinstance(v, int) and not isinstance(v, bool):
                return int(v)
        elif kind == "double":
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                return float(v)
        elif kind == "string":
            if isinstance(v, str):
                return v
        raise bad()

    if ros_type.endswith("_array"):
        if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
            raise bad()
        return [scalar(ros_type[: -len("_array")], v) for v in value]
    return scalar(ros_type, value)


def params_from_values(values: Mapping[str, Any]) -> NodeParams:
    """NodeParams from declared ROS parameter values (lists or array.array for arrays).

    Checks types (integers are fine for doubles), then NodeParams' own validation, then that the
    window and pipeline configs can be built. Raises ValueError with every problem spelled out.
    """
    declared = {d.name: d for d in parameter_declarations()}
    unknown = sorted(set(values) - set(declared))
    if unknown:
        raise ValueError(f"unknown lrm4d parameters {unknown}")
    problems, typed = [], {}
    for name, value in values.items():
        try:
            typed[name] = _coerce(name, declared[name].ros_type, value)
        except ValueError as err:
            problems.append(str(err))
    if problems:
        raise ValueError("invalid lrm4d parameters: " + "; ".join(problems))
    params = NodeParams.from_dict(typed)
    try:
        params.window_config()
        params.pipeline_config()
    except (TypeError, ValueError) as err:
        raise ValueError(f"invalid lrm4d parameters: {err}") from err
    return params


def load_params_file(path: str | Path, node_name: str = "lrm4d") -> NodeParams:
    """Read a ROS 2 parameter YAML (`<node>: ros__parameters: {...}`, or `/**:`) into NodeParams.

    Every value is checked against its parameter's ROS type as the live node's declarations check
    it (`cameras: cam0` is a string where a string array is wanted; `max_views: 12.0` a double
    where an integer is wanted): a ValueError names the file, the parameter and the value."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise FileNotFoundError(f"parameter file {path} not found") from None
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML: {' '.join(str(err).split())}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping with a '{node_name}: ros__parameters:' section")
    section = None
    for key in (node_name, f"/{node_name}", "/**", "**"):
        if isinstance(data.get(key), dict) and "ros__parameters" in data[key]:
            section = data[key]["ros__parameters"]
            break
    else:
        if "ros__parameters" in data:
            section = data["ros__parameters"]
        else:
            raise ValueError(f"{path}: no '{node_name}: ros__parameters:' section (top-level keys: {sorted(map(str, data))})")
    section = section or {}
    if not isinstance(section, dict):
        raise ValueError(f"{path}: ros__parameters must be a mapping, got {type(section).__name__}")
    known = {f.name: str(f.type) for f in fields(NodeParams)}
    unknown = sorted(set(section) - set(known))
    if unknown:
        raise ValueError(f"{path}: unknown lrm4d parameters {unknown}")
    try:
        values = {name: _coerce(name, _ROS_TYPES[known[name]], value) for name, value in section.items()}
        return NodeParams.from_dict(values)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None


def forecast_topic_suffix(horizon_s: float) -> str:
    """ROS topic tokens may not start with a digit: 0.5 s -> 'forecast_500ms'."""
    return f"forecast_{int(round(horizon_s * 1000))}ms"
