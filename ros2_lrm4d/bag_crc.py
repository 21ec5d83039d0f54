"""Chunk CRCs for the mcap bags lrm4d writes.

rosbags (our bag writer) leaves the CRC of every mcap chunk at 0, "not computed", so a bag damaged
on disk or in transfer reads back as if nothing happened. `add_chunk_crcs` rewrites a closed
rosbag2 mcap file record by record with mcap's own writer, which computes each chunk's CRC32:
readers then verify every chunk (rosbags and mcap both do), and `lrm4d replay` reports a damaged
input instead of replaying garbage. Schemas, channels (with their QoS metadata), messages in file
order with their log and publish times, and metadata records (rosbag2's own included) are kept;
metadata.yaml does not change (it names the file and counts messages, which stay the same). The
new file replaces the old one atomically.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["add_chunk_crcs", "mcap_file"]


def mcap_file(bag: str | Path) -> Path:
    """The .mcap file of a rosbag2 directory (or the file itself)."""
    bag = Path(bag)
    if bag.is_file():
        return bag
    files = sorted(bag.glob("*.mcap"))
    if len(files) != 1:
        raise ValueError(f"{bag}: expected one .mcap file, found {[f.name for f in files]}")
    return files[0]


def add_chunk_crcs(bag: str | Path) -> Path:
    """Rewrite a bag's mcap file with chunk CRCs (module docstring); returns the file."""
    from mcap.reader import make_reader
    from mcap.writer import CompressionType, Writer

    path = mcap_file(bag)
    tmp = path.with_name(path.name + ".crc.tmp")
    try:
        with open(path, "rb") as src, open(tmp, "wb") as dst:
            reader = make_reader(src)
            header = reader.get_header()
            summary = reader.get_summary()
            writer = Writer(dst, compression=CompressionType.NONE, enable_crcs=True)
            writer.start(profile=header.profile, library=f"{header.library}; chunk CRCs by lrm4d")
            schema_ids, channel_ids = {}, {}
            for sid, schema in sorted(summary.schemas.items()) if summary is not None else ():
                schema_ids[sid] = writer.register_schema(schema.name, schema.encoding, schema.data)
            for cid, channel in sorted(summary.channels.items()) if summary is not None else ():
                channel_ids[cid] = writer.register_channel(channel.topic, channel.message_encoding,
                                                           schema_ids.get(channel.schema_id, 0), dict(channel.metadata))
            for schema, channel, message in reader.iter_messages(log_time_order=False):
                if channel.id not in channel_ids:  # a file without a summary: register as met
                    if schema is not None and schema.id not in schema_ids:
                        schema_ids[schema.id] = writer.register_schema(schema.name, schema.encoding, schema.data)
                    channel_ids[channel.id] = writer.register_channel(channel.topic, channel.message_encoding,
                                                                      schema_ids.get(channel.schema_id, 0), dict(channel.metadata))
                writer.add_message(channel_ids[channel.id], message.log_time, message.data, message.publish_time,
                                   message.sequence)
            for record in reader.iter_metadata():
                writer.add_metadata(record.name, dict(record.metadata))
            writer.finish()
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
