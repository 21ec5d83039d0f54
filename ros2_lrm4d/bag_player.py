"""Play a rosbag2 into a live ROS 2 graph at its recorded rate (`ros2 run ros2_lrm4d lrm4d_bag_player`).

Why not `ros2 bag play`: it needs the rosbag2 C++ stack, which a minimal ROS install (and this
package's proof-of-life test) may not have; the bag is read here with rosbags and every message
is published as the recorded CDR bytes, so nothing is re-encoded on the way. It also knows the
QoS our node expects per topic and can inject the faults the live tests need:

- QoS: /tf_static reliable + transient local (late joiners get it, like tf2's broadcaster);
  /tf reliable; images and camera infos `image_qos` ("sensor_data" best effort or "reliable");
  every other topic reliable.
- `tf_delay_s`: no TF for the first seconds of playback (/tf in that span is dropped, /tf_static
  is held back and sent when the span ends), to exercise a node that starts before TF arrives.
- `publish_clock`: /clock follows the bag's receive times (for `use_sim_time:=true`).

Parameters (ROS parameters of the node `lrm4d_bag_player`): bag (path, required), rate (1.0),
image_qos ("sensor_data"), qos_depth (10), wait_for_subscribers_s (0: up to this long, wait until
every image topic has a subscriber, e.g. a node still loading its model), start_delay_s (1.0:
discovery time before the first message), tf_delay_s (0), publish_clock (false), topics ("" = all,
else comma-separated), loop (false: when true, start over at the end; the stamps jump back, which
the node treats as a restarted clock and resets its window, for bags of any length: a jump longer
than `jump_back_s` at once, a shorter one that lands before the window's start on its second step,
one inside the window (a bag shorter than the window) on its third rising step),
exit_when_done (true).
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

__all__ = ["PlayItem", "read_schedule", "hold_back_tf", "topic_qos_kind", "main"]

SENSOR_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage", "sensor_msgs/msg/CameraInfo")


@dataclass(frozen=True)
class PlayItem:
    """One message to publish `offset_ns` after playback starts (bag receive time minus the first)."""

    offset_ns: int
    bag_time_ns: int
    topic: str
    msgtype: str
    raw: bytes


def read_schedule(bag: str | Path, topics: Sequence[str] = ()) -> list[PlayItem]:
    """Every message of `bag` (only `topics` if given) in receive-time order, with raw CDR bytes."""
    from rosbags.highlevel import AnyReader

    try:
        reader = AnyReader([Path(bag)])
        reader.open()
    except Exception as err:  # noqa: BLE001 - rosbags raises several types for missing or damaged bags
        raise ValueError(f"cannot read {bag} as a rosbag2: {type(err).__name__}: {err}") from err
    try:
        conns = [c for c in reader.connections if not topics or c.topic in topics]
        missing = sorted(set(topics) - {c.topic for c in reader.connections})
        if missing:
            raise ValueError(f"{bag} has no topic(s) {missing}; it has {sorted({c.topic for c in reader.connections})}")
        rows = [(t, c.topic, c.msgtype, bytes(raw)) for c, t, raw in reader.messages(connections=conns)]
    finally:
        reader.close()
    if not rows:
        return []
    t0 = rows[0][0]
    return [PlayItem(t - t0, t, topic, msgtype, raw) for t, topic, msgtype, raw in rows]


def hold_back_tf(schedule: list[PlayItem], delay_s: float) -> list[PlayItem]:
    """The schedule with no TF before `delay_s`: /tf messages in that span dropped, /tf_static
    messages moved to the end of it (the span's first later message keeps the order stable)."""
    if delay_s <= 0:
        return list(schedule)
    cut = int(delay_s * 1e9)
    out = [item for item in schedule if item.offset_ns >= cut or item.topic not in ("/tf", "/tf_static")]
    held = [PlayItem(cut, item.bag_time_ns, item.topic, item.msgtype, item.raw)
            for item in schedule if item.topic == "/tf_static" and item.offset_ns < cut]
    return sorted(out + held, key=lambda item: item.offset_ns)


def topic_qos_kind(topic: str, msgtype: str, image_qos: str) -> tuple[str, bool]:
    """(reliability "sensor_data"|"reliable", transient_local) for a topic, as the module docstring says."""
    if topic == "/tf_static":
        return "reliable", True
    if msgtype in SENSOR_TYPES:
        return image_qos, False
    return "reliable", False


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: play the bag once (exit 0), or exit 1 when it cannot be read."""
    from rclpy.node import Node
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    from . import process
    from .msgdefs import RclpyFactory

    class BagPlayer(Node):
        def __init__(self) -> None:
            super().__init__("lrm4d_bag_player")
            p = {name: self.declare_parameter(name, default).value for name, default in (
                ("bag", ""), ("rate", 1.0), ("image_qos", "sensor_data"), ("qos_depth", 10), ("start_delay_s", 1.0),
                ("tf_delay_s", 0.0), ("publish_clock", False), ("topics", ""), ("exit_when_done", True),
                ("wait_for_subscribers_s", 0.0), ("loop", False))}
            if not p["bag"]:
                raise ValueError("parameter 'bag' (the rosbag2 to play) is required")
            if p["image_qos"] not in ("sensor_data", "reliable"):
                raise ValueError(f"image_qos must be sensor_data or reliable, got {p['image_qos']!r}")
            if not p["rate"] > 0:
                raise ValueError(f"rate must be positive, got {p['rate']}")
            self.p = p
            self.schedule = hold_back_tf(read_schedule(p["bag"], [t.strip() for t in p["topics"].split(",") if t.strip()]), float(p["tf_delay_s"]))
            self.pubs: dict[str, Any] = {}
            for item in self.schedule:
                if item.topic not in self.pubs:
                    kind, latched = topic_qos_kind(item.topic, item.msgtype, p["image_qos"])
                    qos = QoSProfile(
                        history=HistoryPolicy.KEEP_LAST, depth=100 if item.topic.startswith("/tf") else int(p["qos_depth"]),
                        reliability=ReliabilityPolicy.BEST_EFFORT if kind == "sensor_data" else ReliabilityPolicy.RELIABLE,
                        durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)
                    self.pubs[item.topic] = self.create_publisher(RclpyFactory.message_class(item.msgtype), item.topic, qos)
            self.clock_pub = None
            if p["publish_clock"]:
                self.clock_type = RclpyFactory.message_class("rosgraph_msgs/msg/Clock")
                self.clock_pub = self.create_publisher(self.clock_type, "/clock", 10)
            self.done = threading.Event()
            self.published = 0
            self.thread = threading.Thread(target=self._play, name="bag_player", daemon=True)
            span = self.schedule[-1].offset_ns / 1e9 if self.schedule else 0.0
            self.get_logger().info(
                f"playing {len(self.schedule)} messages on {len(self.pubs)} topics ({span:.1f} s at rate {p['rate']}) "
                f"from {p['bag']} in {p['start_delay_s']} s")
            self.thread.start()

        def destroy_node(self) -> None:
            self.done.set()  # the playback thread stops at its next message or wait
            if self.thread.ident is not None:
                self.thread.join(timeout=1.0)
            super().destroy_node()

        def _wait_for_subscribers(self) -> None:
            images = [self.pubs[t] for t in sorted({i.topic for i in self.schedule if i.msgtype in SENSOR_TYPES[:2]})]
            deadline = time.monotonic() + float(self.p["wait_for_subscribers_s"])
            while any(pub.get_subscription_count() == 0 for pub in images) and time.monotonic() < deadline:
                if self.done.wait(0.1):
                    return
            waiting = sorted({pub.topic_name for pub in images if pub.get_subscription_count() == 0})
            if waiting:
                self.get_logger().warning(f"no subscriber on {waiting} after {self.p['wait_for_subscribers_s']} s: playing anyway")

        def _play(self) -> None:
            rate = float(self.p["rate"])
            if self.p["wait_for_subscribers_s"] > 0:
                self._wait_for_subscribers()
            start = time.monotonic() + float(self.p["start_delay_s"])
            try:
                while True:
                    for item in self.schedule:
                        wait = start + item.offset_ns / 1e9 / rate - time.monotonic()
                        if wait > 0 and self.done.wait(wait):
                            return
                        if not self.context.ok():
                            return
                        if self.clock_pub is not None:
                            clock = self.clock_type()
                            clock.clock.sec, clock.clock.nanosec = divmod(item.bag_time_ns, 1_000_000_000)
                            self.clock_pub.publish(clock)
                        self.pubs[item.topic].publish(item.raw)  # recorded CDR bytes, published as is
                        self.published += 1
                    if not self.p["loop"] or not self.schedule:
                        break
                    start = time.monotonic() + 0.1  # the next round, after a short pause
                self.get_logger().info(f"played {self.published} messages")
            except Exception as err:  # noqa: BLE001 - context shut down under us (Ctrl-C)
                if self.context.ok():
                    self.get_logger().error(f"playback stopped: {type(err).__name__}: {err}")
            finally:
                self.done.set()

    def cannot_play(err: BaseException) -> int:
        print(f"[lrm4d_bag_player] cannot play: {err}", file=sys.stderr)
        return 1

    return process.run(BagPlayer, argv, done=lambda node: node.done.is_set() and node.p["exit_when_done"],
                       on_error=((ValueError, OSError), cannot_play))


if __name__ == "__main__":
    sys.exit(main())
