"""argparse value types shared by several `lrm4d` subcommands (no numpy or torch: `--help` stays light)."""

from __future__ import annotations

import argparse

__all__ = ["parse_color"]


def parse_color(text: str) -> tuple[float, float, float]:
    """argparse type: white|black|gray or R,G,B in [0, 1]."""
    named = {"white": (1.0, 1.0, 1.0), "black": (0.0, 0.0, 0.0), "gray": (0.5, 0.5, 0.5), "grey": (0.5, 0.5, 0.5)}
    if text in named:
        return named[text]
    try:
        rgb = tuple(float(x) for x in text.split(","))
    except ValueError:
        rgb = ()
    if len(rgb) != 3 or not all(0 <= x <= 1 for x in rgb):
        raise argparse.ArgumentTypeError(f"expected white|black|gray or R,G,B in [0, 1], got {text!r}")
    return rgb
