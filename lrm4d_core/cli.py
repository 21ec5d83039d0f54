"""The `lrm4d` command.

Subcommands are registered in ``SUBCOMMANDS`` with their arguments and a ``"module:function"``
target that is imported only when that subcommand runs, so ``lrm4d --help`` stays fast and
importing this module never imports torch. A target is called with the parsed
``argparse.Namespace`` and returns an exit code (``None`` counts as 0).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from dataclasses import dataclass
from typing import Callable, Sequence

from lrm4d_core import __version__


@dataclass(frozen=True)
class Subcommand:
    """One `lrm4d` subcommand: its help line, its lazily imported target, and its arguments."""

    help: str
    target: str  # "package.module:function"
    add_arguments: Callable[[argparse.ArgumentParser], None] | str  # or "module:function", imported
    # when the parser is built: such a module must not import torch at import time


def _positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="lrm4d_demo_out", metavar="DIR", help="output directory (default: %(default)s)")
    parser.add_argument("--size", type=_positive_int, default=128, help="image size in pixels (default: %(default)s)")
    parser.add_argument("--frames", type=_positive_int, default=16, help="number of frames (default: %(default)s)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: %(default)s)")
    parser.add_argument("--rig", choices=("driving", "workspace"), default="driving",
                        help="driving: 6 cameras on a moving car; workspace: static cameras over movers (default: %(default)s)")


def _synth_arguments(parser: argparse.ArgumentParser) -> None:
    """`lrm4d synth` writes the on-disk dataset (--out DIR) or a synthetic rosbag2 (--bag OUT)."""
    _load("lrm4d_core.data.synth:add_arguments")(parser)
    _load("ros2_lrm4d.synth_bag:add_arguments")(parser, shared=False)
    for action in parser._actions:  # --out is required by the dataset writer alone
        if action.dest == "out":
            action.required = False


def synth_main(args: argparse.Namespace) -> int:
    """Dispatch `lrm4d synth` to the dataset writer or to the bag writer (a ROS shell module)."""
    if (args.out is None) == (args.bag is None):
        print("lrm4d synth: give exactly one of --out DIR (dataset) or --bag OUT (rosbag2)", file=sys.stderr)
        return 2
    target = "ros2_lrm4d.synth_bag:main" if args.bag else "lrm4d_core.data.synth:main"
    return int(_load(target)(args) or 0)


SUBCOMMANDS: dict[str, Subcommand] = {
    "demo": Subcommand(
        help="reconstruct a synthetic dynamic scene end to end and write the results",
        target="ros2_lrm4d.demo:main",
        add_arguments=_demo_arguments,
    ),
    "model-info": Subcommand(
        help="print parameter count, preset, input resolution and patch size of a model",
        target="lrm4d_core.model.info:main",
        add_arguments="lrm4d_core.model.info:add_arguments",
    ),
    "synth": Subcommand(
        help="write synthetic dynamic scenes: a dataset (--out DIR) or a multi-camera rosbag2 (--bag OUT)",
        target="lrm4d_core.cli:synth_main",
        add_arguments=_synth_arguments,
    ),
    "export": Subcommand(
        help="write the Gaussians of an output bag at a time as a 3DGS PLY and/or a coloured point cloud",
        target="ros2_lrm4d.export:export_main",
        add_arguments="ros2_lrm4d.export:add_export_arguments",
    ),
    "view": Subcommand(
        help="play the 4D reconstruction of an output bag in an open3d window",
        target="ros2_lrm4d.export:view_main",
        add_arguments="ros2_lrm4d.export:add_view_arguments",
    ),
    "replay": Subcommand(
        help="run the reconstruction node's core over a rosbag2 and write its outputs to a new bag",
        target="ros2_lrm4d.replay:main",
        add_arguments="ros2_lrm4d.replay:add_arguments",
    ),
    "eval": Subcommand(
        help="evaluate a model and the baselines under the SPEC §4 protocols (tables, JSON, figure)",
        target="lrm4d_core.eval.run:main",
        add_arguments="lrm4d_core.eval.run:add_arguments",
    ),
    "serve": Subcommand(
        help="serve a model over gRPC for remote reconstruction (the node's backend:=remote)",
        target="lrm4d_core.serve.server:main",
        add_arguments="lrm4d_core.serve.server:add_arguments",
    ),
    "train": Subcommand(
        help="train or fine-tune a model (one process, or many under torchrun)",
        target="lrm4d_core.train.cli:main",
        add_arguments="lrm4d_core.train.cli:add_arguments",
    ),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The argument parser for `lrm4d`. Every subcommand is listed; with `only`, just that one gets
    its arguments, so running one command never imports the others' modules (torch, ROS shells)."""
    parser = argparse.ArgumentParser(
        prog="lrm4d", description="Reconstruct dynamic scenes as 4D Gaussians with a 4D-LRM transformer."
    )
    parser.add_argument("--version", action="version", version=f"lrm4d {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of an error (default: one line; also LRM4D_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, command in SUBCOMMANDS.items():
        subparser = sub.add_parser(name, help=command.help, description=command.help)
        if name != only:
            continue
        add_arguments = command.add_arguments
        if isinstance(add_arguments, str):
            add_arguments = _load(add_arguments)
        add_arguments(subparser)
    return parser


def _load(target: str) -> Callable[..., int | None]:
    """Import ``"module:function"`` and return the function."""
    module_name, _, function_name = target.partition(":")
    return getattr(importlib.import_module(module_name), function_name)


def main(argv: Sequence[str] | None = None) -> int:
    """Run `lrm4d` with ``argv`` (default: ``sys.argv[1:]``) and return the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(only=next((a for a in argv if not a.startswith("-")), None))
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    command = SUBCOMMANDS[args.command]
    module_name = command.target.partition(":")[0]
    try:
        function = _load(command.target)
    except ModuleNotFoundError as exc:
        parts = module_name.split(".")
        if exc.name not in {".".join(parts[: i + 1]) for i in range(len(parts))}:
            raise  # a dependency missing inside the module: show the real error
        print(f"lrm4d {args.command}: not available in this installation ({exc})", file=sys.stderr)
        return 1
    try:
        result = function(args)
    except KeyboardInterrupt:
        print(f"lrm4d {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - one clear line for the user; the traceback on request
        if args.debug or os.environ.get("LRM4D_DEBUG"):
            raise
        print(f"lrm4d {args.command}: {one_line(exc)} (lrm4d --debug {args.command} ... shows the traceback)", file=sys.stderr)
        return 2 if isinstance(exc, _USER_ERRORS) else 1
    return int(result or 0)


def one_line(exc: BaseException) -> str:
    """An exception as one line: its message (with its type where the message alone is unclear)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if isinstance(exc, _USER_ERRORS) else f"{type(exc).__name__}: {text}"


_USER_ERRORS = (ValueError, OSError)  # bad values, files that are missing, unwritable or in the way


if __name__ == "__main__":
    sys.exit(main())
