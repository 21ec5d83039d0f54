"""`lrm4d train --config FILE`: arguments and entry point (works the same under torchrun)."""

from __future__ import annotations

import argparse
import logging

__all__ = ["add_arguments", "main"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, metavar="FILE", help="training config, YAML or JSON")
    parser.add_argument("--out-dir", default=None, help="override out_dir from the config")
    parser.add_argument("--steps", type=int, default=None, help="override the total number of steps")
    parser.add_argument("--stop-at-step", type=int, default=None, help="end this run at this step (resumable)")
    parser.add_argument("--max-minutes", type=float, default=None, help="end this run after this long (resumable)")
    parser.add_argument("--no-resume", action="store_true", help="start fresh even if out_dir has checkpoints")


def main(args: argparse.Namespace) -> int:
    from .config import load_train_config
    from .loop import train

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cfg = load_train_config(args.config, out_dir=args.out_dir, steps=args.steps)
    max_seconds = args.max_minutes * 60 if args.max_minutes is not None else None
    train(cfg, resume=not args.no_resume, stop_at_step=args.stop_at_step, max_seconds=max_seconds)
    return 0
