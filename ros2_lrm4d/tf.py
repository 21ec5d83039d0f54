"""TF lookups at image stamps: a tf2-like buffer for the bag replay, a tf2_ros wrapper for the node.

Both expose `lookup(target_frame, source_frame, stamp_ns) -> 4x4` (T_target_source: maps points in
source_frame to target_frame, e.g. cam_to_world = lookup(fixed_frame, camera_frame, stamp)) and
raise `LinkMissing` or `Extrapolation`, never block, and count nothing: callers count by exception
type. The replay buffer is written out (tf2 semantics: per-edge linear translation + SLERP between
the bracketing samples, a cache duration per edge) because pytransform3d's TemporalTransformManager
interpolates by ScLERP, clips or raises ValueError out of range, and rebuilds its graph on updates.
"""

from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lrm4d_core.validate import MAX_TRANSLATION_M

from .convert import stamp_to_ns

__all__ = ["TfLookupError", "LinkMissing", "Extrapolation", "TfBuffer", "Tf2Lookup",
           "transform_to_matrix", "quat_wxyz_to_matrix", "slerp"]

NS_PER_S = 1_000_000_000


class TfLookupError(LookupError):
    """No transform for this (target, source, stamp); the frame should be dropped and counted."""


class LinkMissing(TfLookupError):
    """A frame is unknown, or the two frames are not connected."""


class Extrapolation(TfLookupError):
    """The stamp lies outside the buffered time range of a dynamic edge on the path."""


def quat_wxyz_to_matrix(q: np.ndarray) -> np.ndarray:
    """Unit quaternion (w, x, y, z) -> 3x3 rotation matrix."""
    w, x, y, z = q
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


def slerp(q0: np.ndarray, q1: np.ndarray, alpha: float) -> np.ndarray:
    """Spherical linear interpolation of unit quaternions along the shorter arc."""
    dot = float(np.dot(q0, q1))
    if dot < 0.0:
        q1, dot = -q1, -dot
    if dot > 0.9995:  # nearly parallel: lerp is exact to float precision and avoids 0/0
        q = q0 + alpha * (q1 - q0)
        return q / np.linalg.norm(q)
    theta = np.arccos(min(dot, 1.0))
    return (np.sin((1.0 - alpha) * theta) * q0 + np.sin(alpha * theta) * q1) / np.sin(theta)


def _pose_matrix(pose: np.ndarray) -> np.ndarray:
    """[tx, ty, tz, qw, qx, qy, qz] -> 4x4."""
    m = np.eye(4)
    m[:3, :3] = quat_wxyz_to_matrix(pose[3:])
    m[:3, 3] = pose[:3]
    return m


class InvalidTransform(ValueError):
    """A transform that cannot be a pose; `reason` is the counter key (tf_nonfinite, ...)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason




def _transform_pose(transform: Any) -> np.ndarray:
    """geometry_msgs/Transform -> [tx, ty, tz, qw, qx, qy, qz] with the quaternion normalized.

    Raises InvalidTransform for non-finite values, an absurd translation or a zero quaternion.
    """
    t, r = transform.translation, transform.rotation
    pose = np.array([t.x, t.y, t.z, r.w, r.x, r.y, r.z], dtype=np.float64)
    what = f"translation {pose[:3].tolist()}, quaternion (w,x,y,z) {pose[3:].tolist()}"
    if not np.isfinite(pose).all():
        raise InvalidTransform("tf_nonfinite", f"non-finite transform: {what}")
    if np.abs(pose[:3]).max() > MAX_TRANSLATION_M:
        raise InvalidTransform("tf_absurd_translation", f"translation beyond {MAX_TRANSLATION_M:g} m: {what}")
    norm = np.linalg.norm(pose[3:])
    if norm < 1e-9:
        raise InvalidTransform("tf_zero_quaternion", f"zero quaternion: {what}")
    pose[3:] /= norm
    return pose


def transform_to_matrix(transform: Any) -> np.ndarray:
    """geometry_msgs/Transform (ROS quaternion x, y, z, w) -> 4x4 float64."""
    return _pose_matrix(_transform_pose(transform))


def _frame(name: str) -> str:
    """tf2 strips a leading slash from frame ids (ROS 1 bags); do the same on add and lookup."""
    return name[1:] if name.startswith("/") else name


@dataclass
class _Edge:
    """parent <- child samples; static edges hold one pose and no times."""

    parent: str
    static: bool
    times: list[int] = field(default_factory=list)
    poses: list[np.ndarray] = field(default_factory=list)


class TfBuffer:
    """tf2-like transform tree fed from /tf (dynamic) and /tf_static messages of a bag.

    Args:
        cache_duration_s: history kept per dynamic edge, relative to that edge's newest sample.
        extrapolation_tolerance_s: how far beyond an edge's buffered range a lookup may clamp to
            the end sample instead of raising Extrapolation (tf2 itself allows none).
    A child has one parent; a sample naming a new parent replaces the edge and its history.
    """

    def __init__(self, cache_duration_s: float = 10.0, extrapolation_tolerance_s: float = 0.0) -> None:
        if cache_duration_s <= 0 or extrapolation_tolerance_s < 0:
            raise ValueError("need cache_duration_s > 0 and extrapolation_tolerance_s >= 0")
        self.cache_ns = int(round(cache_duration_s * NS_PER_S))
        self.tolerance_ns = int(round(extrapolation_tolerance_s * NS_PER_S))
        self._edges: dict[str, _Edge] = {}
        self.rejected: Counter[str] = Counter()  # why transforms were ignored, by reason
        self.last_problem: str = ""  # the latest rejection, in words

    def clear(self) -> None:
        """Forget everything (e.g. when replay time jumps backwards)."""
        self._edges.clear()

    def clear_dynamic(self) -> None:
        """Forget the /tf history but keep /tf_static (a looping bag publishes static TF only once)."""
        self._edges = {child: e for child, e in self._edges.items() if e.static}

    def frames(self) -> set[str]:
        return set(self._edges) | {e.parent for e in self._edges.values()}

    def add(self, msg: Any, static: bool) -> int:
        """Insert every TransformStamped of a tf2_msgs/TFMessage; returns how many were ignored.

        Ignored, each counted in `rejected` by reason: non-finite values (tf_nonfinite), a
        translation beyond MAX_TRANSLATION_M (tf_absurd_translation), a zero quaternion
        (tf_zero_quaternion), empty or equal frame ids (tf_bad_frame_id), dynamic samples older than
        the cache window of their edge (tf_stale) and repeated stamps (tf_repeated, as tf2).
        """
        ignored = 0
        for ts in msg.transforms:
            parent, child = _frame(str(ts.header.frame_id)), _frame(str(ts.child_frame_id))
            reason, problem = None, ""
            try:
                pose = _transform_pose(ts.transform)
            except InvalidTransform as err:
                reason, problem = err.reason, str(err)
            if reason is None and (not parent or not child or parent == child):
                reason, problem = "tf_bad_frame_id", f"frame ids {parent!r} <- {child!r}"
            if reason is None:
                edge = self._edges.get(child)
                if edge is None or edge.parent != parent or edge.static != static:
                    edge = self._edges[child] = _Edge(parent, static)
                if static:
                    edge.poses = [pose]
                    continue
                reason = self._insert(edge, stamp_to_ns(ts.header.stamp), pose)
                problem = f"{reason.replace('tf_', '')} sample at {stamp_to_ns(ts.header.stamp) / NS_PER_S:.3f} s" if reason else ""
            if reason is not None:
                ignored += 1
                self.rejected[reason] += 1
                self.last_problem = f"{parent} <- {child}: {problem}"
        return ignored

    def _insert(self, edge: _Edge, stamp: int, pose: np.ndarray) -> str | None:
        """Store a dynamic sample; returns why it was not stored, or None."""
        times = edge.times
        if times and stamp < times[-1] - self.cache_ns:
            return "tf_stale"
        i = bisect.bisect_left(times, stamp)
        if i < len(times) and times[i] == stamp:
            return "tf_repeated"
        times.insert(i, stamp)
        edge.poses.insert(i, pose)
        drop = bisect.bisect_left(times, times[-1] - self.cache_ns)
        if drop:
            del times[:drop], edge.poses[:drop]
        return None

    def _edge_pose(self, child: str, edge: _Edge, stamp: int) -> np.ndarray:
        if edge.static:
            return edge.poses[0]
        times, poses = edge.times, edge.poses
        i = bisect.bisect_left(times, stamp)
        if i < len(times) and times[i] == stamp:
            return poses[i]
        if i == 0 or i == len(times):
            end = 0 if i == 0 else len(times) - 1
            if abs(stamp - times[end]) <= self.tolerance_ns:
                return poses[end]
            side = "before the oldest" if i == 0 else "after the newest"
            raise Extrapolation(
                f"{edge.parent} -> {child} at {stamp / NS_PER_S:.9f} s is {abs(stamp - times[end]) / NS_PER_S:.6f} s "
                f"{side} sample (buffered {times[0] / NS_PER_S:.9f} .. {times[-1] / NS_PER_S:.9f} s)"
            )
        t0, t1 = times[i - 1], times[i]
        alpha = (stamp - t0) / (t1 - t0)
        p0, p1 = poses[i - 1], poses[i]
        return np.concatenate([(1 - alpha) * p0[:3] + alpha * p1[:3], slerp(p0[3:], p1[3:], alpha)])

    def _chain(self, frame: str) -> list[str]:
        """[frame, parent, grandparent, ..., root]."""
        chain = [frame]
        while (edge := self._edges.get(chain[-1])) is not None:
            if len(chain) > len(self._edges):
                raise TfLookupError(f"TF tree has a loop through {frame!r}: {' -> '.join(chain)}")
            chain.append(edge.parent)
        return chain

    def _to_ancestor(self, chain: list[str], ancestor: str, stamp: int) -> np.ndarray:
        """T_ancestor_chain[0], composing edges upwards."""
        m = np.eye(4)
        for child in chain[: chain.index(ancestor)]:
            m = _pose_matrix(self._edge_pose(child, self._edges[child], stamp)) @ m
        return m

    def lookup(self, target_frame: str, source_frame: str, stamp_ns: int) -> np.ndarray:
        """T_target_source at stamp_ns as 4x4 float64; raises LinkMissing or Extrapolation."""
        target, source = _frame(target_frame), _frame(source_frame)
        if target == source:
            return np.eye(4)
        known = self.frames()
        for name in (target, source):
            if name not in known:
                raise LinkMissing(f"frame {name!r} does not exist in the TF buffer (known: {sorted(known)})")
        source_chain, target_chain = self._chain(source), self._chain(target)
        ancestor = next((f for f in source_chain if f in set(target_chain)), None)
        if ancestor is None:
            raise LinkMissing(
                f"{target!r} and {source!r} are not connected (trees rooted at {target_chain[-1]!r} and {source_chain[-1]!r})"
            )
        stamp = int(stamp_ns)
        return np.linalg.inv(self._to_ancestor(target_chain, ancestor, stamp)) @ self._to_ancestor(source_chain, ancestor, stamp)


_TF2_EXCEPTIONS = {
    "LookupException": LinkMissing,
    "ConnectivityException": LinkMissing,
    "ExtrapolationException": Extrapolation,
    "TransformException": TfLookupError,  # base of the above and of InvalidArgument/Timeout
}


def _map_tf2_exception(exc: BaseException) -> TfLookupError | None:
    """Our exception for a tf2 one, by class name along its MRO (tf2_ros is imported lazily)."""
    for cls in type(exc).__mro__:
        ours = _TF2_EXCEPTIONS.get(cls.__name__)
        if ours is not None:
            return ours(str(exc))
    return None


class Tf2Lookup:
    """The same `lookup()` over a live tf2_ros.Buffer (filled by a TransformListener in the node).

    Non-blocking: lookup_transform_core neither waits nor spins; tf2 errors map to ours.
    """

    def __init__(self, buffer: Any) -> None:
        self.buffer = buffer
        self.listener: Any = None

    @classmethod
    def for_node(cls, node: Any, cache_duration_s: float = 10.0) -> Tf2Lookup:
        """A Buffer with a TransformListener on `node` (kept alive on the returned object)."""
        from rclpy.duration import Duration
        from tf2_ros import Buffer, TransformListener

        lookup = cls(Buffer(cache_time=Duration(nanoseconds=int(cache_duration_s * NS_PER_S)), node=node))
        lookup.listener = TransformListener(lookup.buffer, node)
        return lookup

    def lookup(self, target_frame: str, source_frame: str, stamp_ns: int) -> np.ndarray:
        from rclpy.time import Time

        try:
            ts = self.buffer.lookup_transform_core(_frame(target_frame), _frame(source_frame), Time(nanoseconds=int(stamp_ns)))
        except Exception as exc:  # noqa: BLE001 - tf2 exceptions have no common importable base here
            ours = _map_tf2_exception(exc)
            if ours is None:
                raise
            raise ours from exc
        return transform_to_matrix(ts.transform)
