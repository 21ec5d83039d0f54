"""`lrm4d replay IN_BAG OUT_BAG --config FILE`: the live node's core, driven from a rosbag2 file.

Reads rosbag2 (mcap or sqlite3) with rosbags, in bag order, and emulates what the node gets live:
- TF: /tf and /tf_static feed a `TfBuffer`; an image is posed once bag time has passed its arrival
  by `tf_wait_s` (TF for a stamp often arrives after the image), else it is dropped as tf_missing
  or tf_extrapolation;
- sync: posed frames whose stamps lie within `sync_slop_s` form one group (at most one frame per
  camera), closed when every camera is in or when the bag has moved `tf_wait_s` past it (a camera
  that stops publishing does not stall the others, which message_filters would);
- then the same `WindowBuffer` -> `Reconstructor` -> `OutputEncoder` as the node, in bag time.

Writes an mcap rosbag2 with the node's output topics under /lrm4d/ (and /tf, /tf_static copied so
the output bag plays back in RViz on its own), every chunk with its CRC (`bag_crc`); an input
bag's chunk CRCs are verified, and a damaged chunk ends the reading there, said in the summary. Bad input never stops the replay: every problem is a
counter in the summary and in /diagnostics, with a rate-limited log line.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator


from lrm4d_core.pipeline import Backend, Products, Reconstructor
from lrm4d_core.stream import Frame, WindowBuffer

from .bag_crc import add_chunk_crcs
from .msgdefs import RosbagsFactory, make_typestore
from .params import NodeParams, load_params_file
from .shell import NODE_NAME, Diagnostics, FrameAssembler, FrameDropped, OutputEncoder, RateLimitedLog
from .tf import TfBuffer

__all__ = ["ReplaySummary", "ReplayError", "replay", "add_arguments", "main"]

log = logging.getLogger(__name__)
NS = 1_000_000_000
TF_TYPE = "tf2_msgs/msg/TFMessage"


class ReplayError(RuntimeError):
    """The input cannot be replayed at all (not a bag, no camera topics)."""


@dataclass
class ReplaySummary:
    frames_in: int = 0
    windows: int = 0
    drops: dict[str, int] = field(default_factory=dict)
    mean_latency_s: float = math.nan
    messages_written: int = 0
    truncated: bool = False
    seconds: float = 0.0
    out_bag: str = ""
    drop_examples: dict[str, str] = field(default_factory=dict)  # reason -> the latest message of that kind
    stopped: str = ""  # why the replay ended before the bag did ("" when it read everything)

    def line(self) -> str:
        drops = ", ".join(f"{k} {v}" for k, v in sorted(self.drops.items())) or "none"
        return (f"replay: {self.frames_in} frames in, {self.windows} windows, drops: {drops}; mean window latency "
                f"{self.mean_latency_s:.3f} s; wrote {self.messages_written} messages to {self.out_bag} in {self.seconds:.1f} s"
                + (" (input bag truncated: read up to the damage)" if self.truncated else "")
                + (f"; stopped early: {self.stopped}" if self.stopped else ""))

    def why_no_windows(self) -> str:
        """One line on why nothing was reconstructed (for a replay that produced no window)."""
        if self.frames_in == 0:
            return "the bag has no messages on the camera topics"
        failed = self.drops.get("reconstruction_failed", 0)
        if failed:  # windows were made but none came out: that is the reason, not the frames
            return (f"all {failed} window(s) failed to reconstruct: "
                    + self.drop_examples.get("reconstruction_failed", "reconstruction_failed"))
        not_frames = ("tf_ignored/", "bad_camera_info", "publish_failed")  # TF entries, CameraInfo messages
        frame_drops = {k: v for k, v in self.drops.items() if not k.startswith(not_frames)}
        if not frame_drops:
            return f"{self.frames_in} frames read but no window completed (too few time steps for min_steps?)"
        top = max(frame_drops, key=frame_drops.get)
        example = self.drop_examples.get(top, "")
        return (f"all {self.frames_in} frames dropped: " if sum(frame_drops.values()) >= self.frames_in else
                f"{sum(frame_drops.values())} of {self.frames_in} frames dropped, most for ") + \
            f"{top}" + (f" ({example})" if example else "")


@dataclass
class _Pending:
    arrival_ns: int
    camera: str
    msg: Any


@dataclass
class _Group:
    stamp_ns: int
    opened_ns: int
    frames: dict[str, Frame] = field(default_factory=dict)


class _Grouper:
    """Stamp grouping of posed frames: the replay's stand-in for ApproximateTimeSynchronizer."""

    def __init__(self, cameras: tuple[str, ...], slop_ns: int, wait_ns: int) -> None:
        self.cameras, self.slop_ns, self.wait_ns = set(cameras), slop_ns, wait_ns
        self.open: list[_Group] = []

    def add(self, frame: Frame, now_ns: int) -> list[list[Frame]]:
        for g in self.open:
            if abs(frame.stamp_ns - g.stamp_ns) <= self.slop_ns and frame.camera not in g.frames:
                g.frames[frame.camera] = frame
                break
        else:
            self.open.append(_Group(frame.stamp_ns, now_ns, {frame.camera: frame}))
        return self.close(now_ns)

    def close(self, now_ns: int | None) -> list[list[Frame]]:
        """Groups that are complete, or (now_ns None: all) that waited long enough; oldest first."""
        done = [g for g in self.open if now_ns is None or set(g.frames) >= self.cameras or now_ns - g.opened_ns > self.wait_ns]
        self.open = [g for g in self.open if g not in done]
        return [sorted(g.frames.values(), key=lambda f: f.camera) for g in sorted(done, key=lambda g: g.stamp_ns)]


class _BagSource:
    """Messages of a rosbag2 as (topic, type, log time, raw CDR). rosbags' AnyReader when the bag
    opens; for an .mcap whose end is damaged (a recording cut off by a crash or a full disk, which
    AnyReader refuses), mcap's stream reader, which yields every complete chunk up to the damage."""

    def __init__(self, path: Path, typestore: Any, summary: ReplaySummary, warn: RateLimitedLog) -> None:
        from rosbags.highlevel import AnyReader

        self.path, self.typestore, self.summary, self.warn = path, typestore, summary, warn
        self.reader = None
        try:
            self.reader = AnyReader([path], default_typestore=typestore)
            self.reader.open()
            self.topics = {c.topic: c.msgtype for c in self.reader.connections}
        except Exception as err:  # noqa: BLE001 - rosbags raises several types for damaged files
            self.reader = None
            self.mcap = next(iter(sorted(path.glob("*.mcap"))), None) if path.is_dir() else (path if path.suffix == ".mcap" else None)
            self.topics = self._mcap_topics() if self.mcap is not None else None
            if not self.topics:
                raise ReplayError(f"cannot open {path} as a rosbag2 (mcap or sqlite3): {type(err).__name__}: {err}") from err
            summary.truncated = True
            warn("truncated", f"{path} is damaged ({err}); reading the mcap stream up to the damage")

    def _mcap_records(self) -> Iterator[Any]:
        from mcap.stream_reader import StreamReader

        with open(self.mcap, "rb") as f:
            try:
                yield from StreamReader(f, skip_magic=False, validate_crcs=True).records
            except Exception as err:  # noqa: BLE001 - the damage: end of the readable part
                self.summary.truncated = True
                self.warn("truncated", f"{self.mcap}: stream ends in damage ({type(err).__name__}); stopped there")

    def _mcap_topics(self) -> dict[str, str]:
        from mcap.records import Channel, Schema

        schemas, topics = {}, {}
        for rec in self._mcap_records():
            if isinstance(rec, Schema):
                schemas[rec.id] = rec.name
            elif isinstance(rec, Channel) and rec.schema_id in schemas:
                topics[rec.topic] = schemas[rec.schema_id]
        return topics

    def count(self, topics: set[str]) -> int | None:
        if self.reader is None:
            return None
        return sum(c.msgcount for c in self.reader.connections if c.topic in topics)

    def messages(self, topics: set[str]) -> Iterator[tuple[str, str, int, bytes]]:
        if self.reader is not None:
            wanted = [c for c in self.reader.connections if c.topic in topics]
            try:
                for conn, t_ns, raw in self.reader.messages(connections=wanted):
                    yield conn.topic, conn.msgtype, t_ns, raw
            except Exception as err:  # noqa: BLE001
                self.summary.truncated = True
                self.warn("truncated", f"input bag is damaged ({type(err).__name__}: {err}); processed what came before")
            return
        from mcap.records import Channel, Message, Schema

        schemas, channels = {}, {}
        for rec in self._mcap_records():
            if isinstance(rec, Schema):
                schemas[rec.id] = rec.name
            elif isinstance(rec, Channel):
                channels[rec.id] = (rec.topic, schemas.get(rec.schema_id, ""))
            elif isinstance(rec, Message) and rec.channel_id in channels:
                topic, msgtype = channels[rec.channel_id]
                if topic in topics:
                    yield topic, msgtype, rec.log_time, rec.data

    def deserialize(self, raw: bytes, msgtype: str) -> Any:
        if self.reader is not None:
            return self.reader.deserialize(raw, msgtype)
        return self.typestore.deserialize_cdr(raw, msgtype)

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()


def _is_rosbag2_dir(path: Path) -> bool:
    """What `--overwrite` may delete: a folder holding metadata.yaml and storage files, nothing else."""
    if not path.is_dir() or not (path / "metadata.yaml").is_file():
        return False
    suffixes = (".yaml", ".mcap", ".db3", ".db3-shm", ".db3-wal", ".zstd")
    return all(p.is_file() and p.name.endswith(suffixes) for p in path.iterdir())


def replay(
    in_bag: str | Path,
    out_bag: str | Path,
    params: NodeParams,
    backend: Backend,
    progress: bool = True,
    copy_tf: bool = True,
    on_products: Callable[[Products], None] | None = None,
    overwrite: bool = False,
) -> ReplaySummary:
    """Replay `in_bag` through the reconstruction core and write the node's outputs to `out_bag` (mcap).
    `on_products` sees every window's products (the demo collects them for its figures).

    The output bag is closed (metadata written, readable) however the replay ends: normally, on an
    error, a full disk or Ctrl-C (`summary.stopped` says why; KeyboardInterrupt is re-raised after
    closing). `overwrite` replaces an existing `out_bag`."""
    import shutil

    from rosbags.rosbag2 import StoragePlugin, Writer

    started = time.perf_counter()
    in_bag, out_bag = Path(in_bag), Path(out_bag)
    if out_bag.exists():
        if not overwrite:
            raise ReplayError(f"{out_bag} exists; choose a new output path or pass --overwrite")
        if out_bag.resolve() == in_bag.resolve() or out_bag.resolve() in in_bag.resolve().parents:
            raise ReplayError(f"{out_bag} is or holds the input bag; choose another output path")
        if not _is_rosbag2_dir(out_bag):
            raise ReplayError(f"{out_bag} is not a rosbag2 folder (metadata.yaml and bag files only); "
                              "--overwrite replaces only bags")
        shutil.rmtree(out_bag)
    if not out_bag.parent.is_dir():
        raise ReplayError(f"cannot write {out_bag}: directory {out_bag.parent} does not exist")
    typestore = make_typestore()
    factory = RosbagsFactory(typestore)
    summary = ReplaySummary(out_bag=str(out_bag))
    warn = RateLimitedLog(log.warning)
    diag = Diagnostics()
    assembler = FrameAssembler(params)
    tf = TfBuffer(cache_duration_s=max(10.0, 2 * params.window_duration_s))
    buffer = WindowBuffer(params.window_config(), camera_order=params.cameras)
    reconstructor = Reconstructor(backend, params.pipeline_config())
    encoder = OutputEncoder(params, factory, backend.model_id)
    grouper = _Grouper(params.cameras, int(params.sync_slop_s * NS), int(max(params.tf_wait_s, params.sync_slop_s) * NS))
    image_topics = {params.image_topic(c): c for c in params.cameras}
    info_topics = {params.camera_info_topic(c): c for c in params.cameras}

    source = _BagSource(in_bag, typestore, summary, warn)
    try:
        wanted = {t for t in source.topics if t in image_topics or t in info_topics or t in ("/tf", "/tf_static")}
        if not wanted & set(image_topics):
            raise ReplayError(f"{in_bag} has none of the image topics {sorted(image_topics)}; it has {sorted(source.topics)}")
        for topic in sorted(set(image_topics) - wanted):
            warn(f"absent:{topic}", f"camera topic {topic} is not in the bag: that camera never publishes")
        writer = Writer(out_bag, version=9, storage_plugin=StoragePlugin.MCAP)
        writer.open()
        connections: dict[str, Any] = {}

        def write(topic: str, msgtype: str, msg: Any, stamp_ns: int) -> None:
            if topic not in connections:
                connections[topic] = writer.add_connection(topic, msgtype, typestore=typestore)
            writer.write(connections[topic], stamp_ns, typestore.serialize_cdr(msg, msgtype))
            summary.messages_written += 1

        def write_diagnostics(now_ns: int) -> None:
            for key in ("out_of_order", "late_dropped", "duplicate_dropped", "time_jump_resets"):
                diag.extra[f"window/{key}"] = str(buffer.counters[key])
            write("/diagnostics", "diagnostic_msgs/msg/DiagnosticArray", diag.to_msg(factory, now_ns), now_ns)

        def run_group(group: list[Frame], now_ns: int) -> None:
            window = buffer.add_step(group)
            if window is None:
                return
            t0 = time.perf_counter()
            try:  # the whole window (reconstruction, encoding) is guarded: one bad window is one drop
                products = reconstructor.process(window)
                messages = [(rel if rel.startswith("/") else f"/{NODE_NAME}/{rel}", msgtype, msg)
                            for rel, msgtype, msg in encoder.encode(products)]
            except Exception as err:  # noqa: BLE001 - a failed window must not end the replay
                diag.frame_dropped("reconstruction_failed")
                diag.update_backend(backend, err)
                summary.drop_examples["reconstruction_failed"] = f"{type(err).__name__}: {err}"
                warn("reconstruction", f"window ending {window.end_ns / NS:.3f} s failed: {type(err).__name__}: {err}")
                return
            diag.window_done(products, time.perf_counter() - t0)
            diag.update_backend(backend)
            # header stamps are the source stamps (the window end); the log (receive) time is the bag
            # time at which the node would have published, so log time stays monotonic in a looping bag
            for topic, msgtype, msg in messages:
                write(topic, msgtype, msg, now_ns)
            write_diagnostics(now_ns)
            if on_products is not None:
                on_products(products)

        def pose_ready(now_ns: int | None) -> None:
            while pending and (now_ns is None or now_ns - pending[0].arrival_ns >= params.tf_wait_s * NS):
                item = pending.pop(0)
                try:
                    frame = assembler.make_frame(item.camera, item.msg, tf.lookup)
                except FrameDropped as drop:
                    diag.frame_dropped(drop.reason)
                    summary.drop_examples[drop.reason] = str(drop) + (
                        f"; frames in the TF tree: {sorted(tf.frames())}" if drop.reason == "tf_missing" else "")
                    warn(drop.reason, f"dropped frame: {drop}")
                    continue
                for group in grouper.add(frame, item.arrival_ns if now_ns is None else now_ns):
                    run_group(group, now_ns if now_ns is not None else item.arrival_ns)
            for group in grouper.close(now_ns):
                run_group(group, now_ns if now_ns is not None else group[-1].stamp_ns)

        pending: list[_Pending] = []
        last_tf_stamp = -(2**62)
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=source.count(wanted), desc="replay", unit="msg", dynamic_ncols=True)
        interrupted, last_ns = False, 0
        try:
            for topic, msgtype, t_ns, raw in source.messages(wanted):
                if bar is not None:
                    bar.update(1)
                try:
                    msg = source.deserialize(raw, msgtype)
                except Exception as err:  # noqa: BLE001
                    diag.frame_dropped("undecodable_message")
                    warn("undecodable", f"{topic}: cannot decode message at {t_ns / NS:.3f} s: {err}")
                    continue
                if topic in ("/tf", "/tf_static"):
                    static = topic == "/tf_static"
                    stamps = [t.header.stamp.sec * NS + t.header.stamp.nanosec for t in msg.transforms]
                    if not static and stamps:
                        if max(stamps) < last_tf_stamp - params.jump_back_s * NS:
                            tf.clear_dynamic()
                            warn("tf_jump", "TF time jumped back: dynamic transforms cleared")
                            last_tf_stamp = max(stamps)
                        last_tf_stamp = max(last_tf_stamp, max(stamps))
                    before = Counter(tf.rejected)
                    if tf.add(msg, static=static):
                        for reason, n in (tf.rejected - before).items():
                            diag.frame_dropped(f"tf_ignored/{reason}", n)
                        warn("tf_ignored", f"{topic}: ignored transform(s): {tf.last_problem}")
                    if copy_tf:
                        write(topic, TF_TYPE, msg, t_ns)
                elif topic in info_topics:
                    try:
                        assembler.update_camera_info(info_topics[topic], msg)
                    except FrameDropped as drop:
                        diag.frame_dropped(drop.reason)
                        summary.drop_examples[drop.reason] = str(drop)
                        warn(drop.reason, str(drop))
                else:
                    camera = image_topics[topic]
                    summary.frames_in += 1
                    diag.frame_received(camera, t_ns)
                    pending.append(_Pending(t_ns, camera, msg))
                last_ns = t_ns
                pose_ready(t_ns)
            pose_ready(None)
        except KeyboardInterrupt:
            interrupted = True
            summary.stopped = "interrupted (Ctrl-C); the output bag holds everything published until then"
        except OSError as err:  # e.g. the disk is full
            summary.stopped = f"{type(err).__name__}: {err}"
            log.error("replay stopped: %s", summary.stopped)
        finally:
            if bar is not None:
                bar.close()
            try:  # a last /diagnostics, so that drops after the last window are in the bag too
                write_diagnostics(last_ns)
            except Exception as err:  # noqa: BLE001 - closing the bag matters more
                log.error("could not write the final diagnostics: %s", err)
            try:
                writer.close()
                add_chunk_crcs(out_bag)  # readers can then verify every chunk
            except Exception as err:  # noqa: BLE001
                summary.stopped += f"; the output bag could not be closed ({type(err).__name__}: {err})"
                log.error("could not close %s: %s", out_bag, err)
        if interrupted:
            raise KeyboardInterrupt
    finally:
        source.close()
    summary.windows = diag.counters["windows"]
    summary.drops = {**dict(diag.drops), **{k: v for k, v in buffer.counters.items()
                                            if k in ("late_dropped", "duplicate_dropped", "time_jump_resets", "out_of_order") and v}}
    summary.mean_latency_s = diag.mean_latency()
    summary.seconds = time.perf_counter() - started
    return summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("in_bag", help="input rosbag2 (directory or .mcap / .db3)")
    parser.add_argument("out_bag", help="output rosbag2 directory (mcap), must not exist (see --overwrite)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output bag")
    parser.add_argument("--config", default=None, help="node parameters YAML (config/reconstruct.yaml layout)")
    parser.add_argument("--checkpoint", default=None, help="model checkpoint (default: the config's, else the embedded default)")
    parser.add_argument("--device", default=None, help="auto, cpu or cuda[:N] (default: the config's)")
    parser.add_argument("--no-progress", action="store_true")


def main(args: argparse.Namespace) -> int:
    import dataclasses

    from .backend import make_backend

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    params = load_params_file(args.config) if args.config else NodeParams()
    overrides = {k: v for k, v in (("checkpoint", args.checkpoint), ("device", args.device)) if v}
    params = dataclasses.replace(params, **overrides)
    backend = make_backend(params, offline=True)
    try:
        summary = replay(args.in_bag, args.out_bag, params, backend, progress=not args.no_progress, overwrite=args.overwrite)
    except ReplayError as err:
        print(f"lrm4d replay: {err}", file=sys.stderr)
        return 2
    print(summary.line())
    if summary.stopped:
        return 1
    if summary.windows == 0:
        print(f"lrm4d replay: no window reconstructed: {summary.why_no_windows()}", file=sys.stderr)
        return 1
    return 0
