"""Where message classes come from, for both shells.

The live node builds rclpy messages (generated classes, `ros2_lrm4d.msg` exists in a colcon
build); the replay builds rosbags dataclasses, and outside ROS our own message exists only as .msg
text that we register with a rosbags typestore. Encoders take a `MessageFactory` so the same code
serves both.
"""

from __future__ import annotations

import abc
import array
import importlib
from importlib import resources
from typing import Any

import numpy as np

__all__ = [
    "GAUSSIAN_CLOUD4D",
    "MessageFactory",
    "RclpyFactory",
    "RosbagsFactory",
    "gaussian_cloud4d_msg_text",
    "make_typestore",
    "msg_text",
    "MOVING_OBJECTS",
]

GAUSSIAN_CLOUD4D = "ros2_lrm4d/msg/GaussianCloud4D"
"""Full ROS 2 type name of our message (as rosbags and rosbag2 spell it)."""
MOVING_OBJECTS = "ros2_lrm4d/msg/MovingObjects"

NS_PER_S = 1_000_000_000


def msg_text(name: str) -> str:
    """A .msg definition shipped as package data (a copy of msg/<name>.msg)."""
    return resources.files("ros2_lrm4d").joinpath(f"msg_defs/{name}.msg").read_text(encoding="utf-8")


def gaussian_cloud4d_msg_text() -> str:
    """The .msg definition of GaussianCloud4D (a copy of msg/GaussianCloud4D.msg)."""
    return msg_text("GaussianCloud4D")


def make_typestore() -> Any:
    """A fresh rosbags ROS 2 Jazzy typestore with our messages (GaussianCloud4D, MovingObjects) registered."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    typestore = get_typestore(Stores.ROS2_JAZZY)
    typestore.register(get_types_from_msg(gaussian_cloud4d_msg_text(), GAUSSIAN_CLOUD4D))
    typestore.register(get_types_from_msg(msg_text("MovingObjects"), MOVING_OBJECTS))
    return typestore


class MessageFactory(abc.ABC):
    """Builds messages by full type name ("sensor_msgs/msg/PointCloud2") and field values.

    All fields must be given (rosbags dataclasses have no defaults). Byte and numeric arrays are
    passed as numpy arrays; each backend converts them to what its message classes want.
    """

    @abc.abstractmethod
    def make(self, typename: str, **fields: Any) -> Any:
        """An instance of `typename` with `fields`."""

    def time(self, ns: int) -> Any:
        """builtin_interfaces/Time from int nanoseconds (nanosec always in [0, 1e9))."""
        sec, nanosec = divmod(int(ns), NS_PER_S)
        return self.make("builtin_interfaces/msg/Time", sec=sec, nanosec=nanosec)

    def header(self, frame_id: str, stamp_ns: int) -> Any:
        return self.make("std_msgs/msg/Header", stamp=self.time(stamp_ns), frame_id=frame_id)

    def point_field(self, name: str, offset: int, datatype: int, count: int = 1) -> Any:
        return self.make("sensor_msgs/msg/PointField", name=name, offset=offset, datatype=datatype, count=count)


class RosbagsFactory(MessageFactory):
    """rosbags dataclasses from a typestore (default: `make_typestore()`), ready for serialize_cdr."""

    def __init__(self, typestore: Any = None) -> None:
        self.typestore = typestore if typestore is not None else make_typestore()

    def make(self, typename: str, **fields: Any) -> Any:
        try:
            cls = self.typestore.types[typename]
        except KeyError:
            raise KeyError(f"message type {typename!r} is not in the rosbags typestore") from None
        for name, value in fields.items():
            if isinstance(value, (bytes, bytearray, memoryview)):
                fields[name] = np.frombuffer(value, dtype=np.uint8).copy()
        return cls(**fields)


_SEQUENCE_TYPECODES = {
    "uint8": "B", "int8": "b", "uint16": "H", "int16": "h", "uint32": "I", "int32": "i",
    "uint64": "Q", "int64": "q", "float": "f", "double": "d",
}


class RclpyFactory(MessageFactory):
    """rclpy generated classes, imported lazily (`ros2_lrm4d.msg` needs the colcon build).

    rclpy wants array.array for unbounded numeric sequences (uint8[] data above all: anything else
    is checked element by element in Python) and numpy arrays for fixed-size arrays.
    """

    @staticmethod
    def message_class(typename: str) -> Any:
        """The generated class of "pkg/msg/Name" (for publishers and subscriptions too)."""
        package, kind, name = typename.split("/")
        return getattr(importlib.import_module(f"{package}.{kind}"), name)

    def make(self, typename: str, **fields: Any) -> Any:
        cls = self.message_class(typename)
        types = cls.get_fields_and_field_types()
        for field, value in fields.items():
            ftype = types.get(field, "")
            if ftype in ("byte", "octet") and isinstance(value, int):  # rclpy wants bytes of length 1
                fields[field] = bytes([value])
            elif ftype.startswith("sequence<") and isinstance(value, (np.ndarray, bytes, bytearray, memoryview)):
                element = ftype[len("sequence<"):].split(",")[0].rstrip(">")
                code = _SEQUENCE_TYPECODES.get(element)
                if code is not None:
                    data = np.ascontiguousarray(value if isinstance(value, np.ndarray) else np.frombuffer(value, np.uint8))
                    if data.dtype != np.uint8:
                        data = data.astype(np.dtype(code))
                    out = array.array(code)
                    out.frombytes(data.tobytes())
                    fields[field] = out
        return cls(**fields)
