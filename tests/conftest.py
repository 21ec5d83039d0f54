"""Shared pytest setup: the `cuda` and `ros` markers.

- ``@pytest.mark.cuda``: skipped when ``torch.cuda.is_available()`` is False.
- ``@pytest.mark.ros``: skipped when ``rclpy`` cannot be imported (no sourced ROS 2 installation).

The markers are also declared in pyproject.toml; registering them here as well keeps them known
when the suite runs from another root (e.g. ``colcon test``).
"""

from __future__ import annotations

import functools

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "cuda: needs a CUDA GPU; skipped when torch.cuda.is_available() is False")
    config.addinivalue_line("markers", "ros: needs a ROS 2 installation (rclpy); skipped when rclpy cannot be imported")


@functools.lru_cache(maxsize=None)
def _cuda_missing() -> str | None:
    """None when a CUDA GPU is usable, else the reason to skip."""
    try:
        import torch
    except Exception as exc:  # noqa: BLE001 - any import failure means no CUDA here
        return f"torch not importable: {exc}"
    return None if torch.cuda.is_available() else "needs CUDA (torch.cuda.is_available() is False)"


@functools.lru_cache(maxsize=None)
def _ros_missing() -> str | None:
    """None when rclpy imports, else the reason to skip."""
    try:
        import rclpy  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - ImportError, or a ROS built for another Python
        return f"needs ROS 2 (rclpy not importable: {exc})"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Only probe torch/rclpy when a collected test carries the marker.
    for item in items:
        if item.get_closest_marker("cuda") is not None and (reason := _cuda_missing()):
            item.add_marker(pytest.mark.skip(reason=reason))
        if item.get_closest_marker("ros") is not None and (reason := _ros_missing()):
            item.add_marker(pytest.mark.skip(reason=reason))
