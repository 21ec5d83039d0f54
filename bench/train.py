"""Training throughput per recipe, side by side in one run (JSON out).

    python bench/train.py --data data/object --data data/driving [--steps 12] [--out docs/bench/train_cpu.json]

Runs the real training step (`lrm4d_core.train.loop.training_step`, backward, AdamW) for a few steps
per recipe on the same data and reports examples per second and the share of each stage of a step:
data (draw and load the examples), prepare (normalize), forward, render (targets), loss, backward,
optimizer. Two warm-up steps per recipe are not counted; the steps run twice and the second pass
is reported (the first, "cold", pays for building the decoded-scene cache once per scene, which a
long run amortizes). Recipes:

* ``session2``: what trained the previous default model (docs/default_model/session2/train_tiny.yaml): SPEC §1
  parametrization, 64x64, 8 inputs and 4 targets, PNGs decoded every step, one process;
* ``prior_64``: the new recipe's final stage: "prior" parametrization and environment map, depth,
  opacity and velocity losses, decoded scenes cached (`data.cache`), 64x64, 12 inputs, 4 targets;
* ``prior_32``: its first curriculum stage: the same at 32x32 with 8 inputs;
* ``prior_32_ddp2`` / ``prior_64_ddp2``: those under torchrun with two processes (gloo, one thread
  each): both cores; examples/s counts both processes' examples.

Numbers depend on the machine and on what else runs; compare recipes within one output.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

STAGES = ("data", "prepare", "forward", "render", "loss", "backward", "optimizer")


def recipes(data: list[str], cache_dir: str) -> dict[str, dict]:
    sources = [{"root": d, "weight": 1.0} for d in data]
    session2 = {"model": {"preset": "tiny", "parametrization": "spec", "environment": False}, "data": sources,
                "curriculum": [{"step": 0, "image_size": [64, 64], "batch_size": 1}], "num_input": 8, "num_target": 4}
    new = {"model": {"preset": "tiny"}, "data": sources, "num_target": 4, "cache_dir": cache_dir,
           "lambda_depth": 1.0, "lambda_opacity": 0.1, "lambda_velocity": 0.5}
    prior_64 = {**new, "curriculum": [{"step": 0, "image_size": [64, 64], "batch_size": 1}], "num_input": 12}
    prior_32 = {**new, "curriculum": [{"step": 0, "image_size": [32, 32], "batch_size": 1}], "num_input": 8}
    return {"session2": session2, "prior_64": prior_64, "prior_32": prior_32,
            "prior_32_ddp2": {**prior_32, "_processes": 2}, "prior_64_ddp2": {**prior_64, "_processes": 2}}


def measure(spec: dict, steps: int, warmup: int = 2) -> dict:
    """Run `steps` + `warmup` training steps in this process (DDP when under torchrun)."""
    import torch
    import torch.distributed as dist

    from lrm4d_core.train.config import TrainConfig
    from lrm4d_core.train.loop import (StepTimer, _init_distributed, _initial_model, _param_groups, draw_examples,
                                       example_source, training_step)

    rank, world, device = _init_distributed()
    cfg = TrainConfig(**{k: v for k, v in spec.items() if not k.startswith("_")}, out_dir=tempfile.mkdtemp(),
                      steps=steps + warmup, lambda_perceptual=0.0)
    torch.manual_seed(0)
    model = _initial_model(cfg).to(device)
    ddp = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    opt = torch.optim.AdamW(_param_groups(model, cfg.weight_decay), lr=1e-4)
    source = example_source(cfg)
    timer = StepTimer()
    passes = []
    for _ in range(2):  # the same steps twice: cold (cached recipes build their packs) then warm
        t_start = 0.0
        for step in range(steps + warmup):
            if step == warmup:
                timer.seconds.clear()
                t_start = time.perf_counter()
            timer.lap("other")
            examples = draw_examples(source, cfg, step, rank)
            timer.lap("data")
            loss, _, _, _ = training_step(model, ddp, examples, cfg, device, timer=timer)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            timer.lap("backward")
            opt.step()
            timer.lap("optimizer")
        passes.append((time.perf_counter() - t_start, dict(timer.seconds)))
    if world > 1:
        dist.barrier()
    (cold, cold_stages), (seconds, stages) = passes
    total = sum(stages[s] for s in STAGES)
    return {"processes": world, "steps": steps, "seconds": seconds, "examples_per_s": world * steps / seconds,
            "examples_per_s_cold": world * steps / cold, "data_s_per_step_cold": cold_stages["data"] / steps,
            "stage_share": {s: stages[s] / total for s in STAGES}, "stage_seconds_per_step": {s: stages[s] / steps for s in STAGES}}


def run_ddp(spec: dict, steps: int) -> dict:
    """`measure` under torchrun with spec["_processes"] processes; rank 0's JSON is the result."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump({"spec": spec, "steps": steps}, f)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(spec["_processes"]),
           "--master_port", "29517", __file__, "--worker", f.name]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"torchrun failed ({out.returncode}): {out.stderr[-2000:]}")
    return json.loads(lines[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", action="append", default=[], help="scene root (repeat); scenes need depth, masks, velocity")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--only", nargs="+", default=None, help="subset of the recipes")
    parser.add_argument("--cache-dir", default=None, help="where decoded scenes are cached (default: a temporary dir)")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:  # one torchrun process
        job = json.loads(Path(args.worker).read_text())
        result = measure(job["spec"], job["steps"])
        if int(os.environ.get("RANK", "0")) == 0:
            print(json.dumps(result))
        return
    if not args.data:
        parser.error("give --data at least once")
    import torch

    torch.set_num_threads(1)
    cache = args.cache_dir or tempfile.mkdtemp(prefix="lrm4d_cache_")
    results = {}
    for name, spec in recipes(args.data, cache).items():
        if args.only and name not in args.only:
            continue
        results[name] = run_ddp(spec, args.steps) if spec.get("_processes", 1) > 1 else measure(spec, args.steps)
        print(f"{name}: {results[name]['examples_per_s']:.2f} examples/s", file=sys.stderr)
    base = results.get("session2", {}).get("examples_per_s")
    report = {
        "benchmark": "train", "machine": platform.machine(), "processor": platform.processor(), "cpus": os.cpu_count(),
        "torch": __import__("torch").__version__, "steps_per_recipe": args.steps, "data": args.data,
        "recipes": results,
        "speedup_vs_session2": {k: v["examples_per_s"] / base for k, v in results.items()} if base else None,
    }
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
