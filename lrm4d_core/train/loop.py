"""The training loop: one process or many under torchrun (DDP; gloo on CPU, nccl on GPU).

    lrm4d train --config FILE                              # one process
    torchrun --nproc_per_node 8 -m lrm4d_core.cli train --config FILE
    torchrun --nnodes 4 --node_rank R --rdzv_endpoint HOST:PORT ... (many machines)

Per step and process: draw `batch_size` examples (input and target view-times sampled
independently, SPEC §3), run the model on the inputs, slice its Gaussians at every target time,
render the target cameras (over the model's environment map, or its background colour), and
minimise MSE + lambda_p * perceptual (+ lambda_ssim * (1 - SSIM)), plus, for data that has them,
supervision of the input pixels' Gaussians (`train.losses`): lambda_depth * depth error (log depth
for the "prior" parametrization), lambda_opacity * opacity vs "a surface is seen", lambda_velocity *
implied velocity vs the true scene flow.

Reproducibility: every example is a pure function of (seed, step, rank, slot), so resuming from a
checkpoint replays exactly the batches an uninterrupted run would have seen; model, optimizer,
scheduler and RNG states are restored from safetensors (train.state).

Robustness: a non-finite loss or gradient on any process skips the step on all processes (so DDP
stays in lockstep), is counted, and `max_bad_steps` in a row stop the run with a clear error.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from lrm4d_core.cameras import Cameras, TimeNormalization
from lrm4d_core.eval.metrics import psnr, ssim
from lrm4d_core.model.api import estimate_scene_normalization
from lrm4d_core.model.config import preset as make_preset
from lrm4d_core.model.lrm4d import LRM4D
from lrm4d_core.model.prior import input_time_gap

from .config import TrainConfig
from .examples import ExampleSource
from .losses import depth_loss, opacity_loss, persistence_loss, render_targets, velocity_loss
from .state import latest_checkpoint, load_training_state, save_training_state

__all__ = ["train", "TooManyBadSteps", "prepare_batch", "with_input_targets", "render_targets", "depth_loss", "Batch", "StepTimer", "training_step"]

log = logging.getLogger(__name__)


class TooManyBadSteps(RuntimeError):
    """The loss or the gradients were non-finite for `max_bad_steps` steps in a row."""


@dataclass
class Batch:
    """A normalized training batch (model box, model time), B examples.

    input_images [B, Vi, 3, H, W]; input_cameras B*Vi cameras; input_times [B, Vi];
    target_images [B, Vt, 3, H, W]; target_cameras B*Vt cameras; target_times [B, Vt].
    """

    input_images: Tensor
    input_cameras: Cameras
    input_times: Tensor
    target_images: Tensor
    target_cameras: Cameras
    target_times: Tensor
    input_depths: Tensor | None = None  # [B, Vi, H, W] z-depth in model units (inf: no surface)
    input_velocities: Tensor | None = None  # [B, Vi, H, W, 3] model units per model time (NaN: none)
    world_scale: Tensor | None = None  # [B] world units per model unit (the scene normalization)
    ground_height: Tensor | None = None  # [B] height of the scene's ground in the model box, NaN: none


def prepare_batch(examples: list[dict[str, Tensor]], model: LRM4D, device: torch.device) -> Batch:
    """Normalize each example exactly as `model.api.reconstruct` does at inference: the scene from
    the input cameras, time from the input times, so training and inference see the same frames."""
    counts = {(len(ex["input_images"]), len(ex["target_images"])) for ex in examples}
    if len(counts) > 1:
        raise ValueError(f"a batch needs one input and one target count per example, got (inputs, targets) {sorted(counts)}: "
                         "with input_protocols mixing layouts of different sizes, use batch_size 1 (several "
                         "processes under torchrun for a larger effective batch)")
    ins, outs, depths, velocities, scales, grounds = [], [], [], [], [], []
    for ex in examples:
        h, w = ex["input_images"].shape[-2:]
        in_cams = Cameras(ex["input_K"].double(), ex["input_cam_to_world"].double(), w, h)
        tg_cams = Cameras(ex["target_K"].double(), ex["target_cam_to_world"].double(), w, h)
        scene = estimate_scene_normalization(in_cams, model.config)
        times = ex["input_times"].double()
        tnorm = TimeNormalization.spanning(float(times.min()), float(times.max()))
        ins.append((scene.cameras_to_model(in_cams), tnorm.to_model(times)))
        outs.append((scene.cameras_to_model(tg_cams), tnorm.to_model(ex["target_times"].double())))
        scales.append(scene.scale)
        grounds.append(scene.height_to_model(ex.get("ground_z", math.nan)))  # NaN stays NaN: no ground
        if "input_depths" in ex:
            depths.append(ex["input_depths"].double() / scene.scale)  # a similarity scales z-depth too
        if "input_velocities" in ex:
            velocities.append(ex["input_velocities"].double() * (tnorm.half_span / scene.scale))
    f32 = dict(device=device, dtype=torch.float32)
    return Batch(
        input_images=torch.stack([ex["input_images"] for ex in examples]).to(**f32),
        input_cameras=Cameras.cat([c for c, _ in ins]).to(**f32),
        input_times=torch.stack([t for _, t in ins]).to(**f32),
        target_images=torch.stack([ex["target_images"] for ex in examples]).to(**f32),
        target_cameras=Cameras.cat([c for c, _ in outs]).to(**f32),
        target_times=torch.stack([t for _, t in outs]).to(**f32),
        input_depths=torch.stack(depths).to(**f32) if len(depths) == len(examples) else None,
        input_velocities=torch.stack(velocities).to(**f32) if len(velocities) == len(examples) else None,
        world_scale=torch.tensor(scales, dtype=torch.float32),
        ground_height=torch.tensor(grounds, dtype=torch.float32),
    )


def with_input_targets(batch: Batch, count: int) -> Batch:
    """`batch` with `count` of its input views (evenly spaced in input order, at their own time)
    appended to every example's targets.

    Why: re-rendering a seen view at its own time is what the pixel-aligned Gaussians should do
    best, yet the other views' Gaussians (depth errors, neighbouring times) blur it; independent
    target draws include such a view only by chance.
    """
    if count <= 0:
        return batch
    B, Vi = batch.input_times.shape
    Vt = batch.target_times.shape[1]
    pick = torch.linspace(0, Vi - 1, min(count, Vi)).round().long().to(batch.input_times.device)
    cams = []
    for b in range(B):
        cams += [batch.target_cameras[b * Vt:(b + 1) * Vt], batch.input_cameras[b * Vi + pick]]
    return replace(
        batch,
        target_images=torch.cat([batch.target_images, batch.input_images[:, pick]], dim=1),
        target_cameras=Cameras.cat(cams),
        target_times=torch.cat([batch.target_times, batch.input_times[:, pick]], dim=1),
    )


def _init_distributed() -> tuple[int, int, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return rank, world, device


def _lr_lambda(cfg: TrainConfig):
    def factor(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """No weight decay on biases, norms and the free-token embeddings (1-D tensors)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=Path(__file__).parent).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _all_max(value: float, world: int, device: torch.device) -> float:
    if world == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t)


def _initial_model(cfg: TrainConfig) -> LRM4D:
    """A fresh model from `cfg.model` (compositing on `cfg.background`), or (fine-tuning) the weights
    and architecture of `cfg.init_from`, whose config must agree with every field `cfg.model` names
    explicitly and with `cfg.background`."""
    overrides = dict(cfg.model)
    if cfg.init_from is None:
        overrides.setdefault("background", tuple(cfg.background))
        model_cfg = make_preset(overrides.pop("preset", "tiny"), **overrides)
        model = LRM4D(model_cfg.replace(grad_checkpointing=cfg.grad_checkpointing))
    else:
        from lrm4d_core.io.checkpoint import load_checkpoint

        model, _, _ = load_checkpoint(cfg.init_from, grad_checkpointing=cfg.grad_checkpointing)
        model = model.float().train()
        have = model.config.to_dict()
        wanted = {**overrides, "background": list(cfg.background)}
        clash = {k: (v, have.get(k)) for k, v in wanted.items() if k not in have or have[k] != v}
        if clash:
            raise ValueError(f"init_from {cfg.init_from}: the checkpoint's model config differs from the training "
                             f"config's model entries {{name: (config, checkpoint)}}: {clash}")
    model.inference_steps_in_training = cfg.inference_steps
    return model


class StepTimer:
    """Wall-clock seconds per stage of a training step, summed over steps (bench/train.py)."""

    def __init__(self) -> None:
        self.seconds: Counter[str] = Counter()
        self._t = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.seconds[stage] += now - self._t
        self._t = now


def training_step(
    model: LRM4D,
    ddp: torch.nn.Module,
    examples: list[dict[str, Tensor]],
    cfg: TrainConfig,
    device: torch.device,
    perceptual: torch.nn.Module | None = None,
    timer: StepTimer | None = None,
) -> tuple[Tensor, dict[str, float], Tensor, Tensor]:
    """Forward, render and loss of one step (no backward): (loss, terms, prediction, target).

    Stages timed with `timer`: prepare, forward, render, loss.
    """
    timer = timer or StepTimer()
    batch = with_input_targets(prepare_batch(examples, model, device), cfg.input_targets)
    timer.lap("prepare")
    ddp.train()
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    with autocast:
        out = ddp(batch.input_images, batch.input_cameras, batch.input_times, world_scale=batch.world_scale,
                  ground_height=batch.ground_height,
                  with_environment=True)
    gaussians = out.gaussians.to(dtype=torch.float32)
    # the input-pixel losses read the network's own decoding where inference-time steps correct it
    own = gaussians if out.own is None else out.own.to(dtype=torch.float32)
    environment = out.environment.to(dtype=torch.float32) if out.environment is not None else None
    timer.lap("forward")
    background = torch.tensor(model.config.background, dtype=torch.float32, device=device)
    vi = batch.input_times.shape[1]
    pred = render_targets(gaussians, batch.target_cameras, batch.target_times, background, environment,
                          model.config.view_weighting, batch.input_cameras.cam_to_world[:, :3, 3].reshape(-1, vi, 3),
                          batch.input_cameras.width * batch.input_cameras.height)
    timer.lap("render")
    target = batch.target_images
    mse = F.mse_loss(pred, target)
    loss = mse
    terms = {"mse": mse.item()}
    if perceptual is not None:
        p = perceptual(pred.flatten(0, 1), target.flatten(0, 1))
        loss = loss + cfg.lambda_perceptual * p
        terms["perceptual"] = p.item()
    prior = model.config.parametrization == "prior"
    if cfg.lambda_depth > 0:
        far = model.config.prior.far if prior else model.config.activation.far
        d = depth_loss(own, batch.input_cameras, batch.input_depths, far, log=prior)
        loss = loss + cfg.lambda_depth * d
        terms["depth"] = d.item()
    if cfg.lambda_opacity > 0:
        o = opacity_loss(own, batch.input_depths)
        loss = loss + cfg.lambda_opacity * o
        terms["opacity"] = o.item()
    if cfg.lambda_velocity > 0:
        v = velocity_loss(own, batch.input_velocities, cfg.moving_speed if cfg.velocity_balance else None)
        loss = loss + cfg.lambda_velocity * v
        terms["velocity"] = v.item()
    if cfg.lambda_persistence > 0:
        floor = cfg.persistence_gaps * input_time_gap(batch.input_times)
        p = persistence_loss(own, batch.input_velocities, floor, cfg.moving_speed)
        loss = loss + cfg.lambda_persistence * p
        terms["persistence"] = p.item()
    if cfg.lambda_ssim > 0:
        s = ssim(pred, target).mean()
        loss = loss + cfg.lambda_ssim * (1 - s)
        terms["ssim"] = s.item()
    timer.lap("loss")
    return loss, terms, pred, target


def draw_examples(source: ExampleSource, cfg: TrainConfig, step: int, rank: int) -> list[dict[str, Tensor]]:
    """The examples of one step and process (curriculum stage: size, batch and view counts)."""
    stage = cfg.stage(step)
    return [source.draw(cfg.seed, step, rank, slot, stage.image_size, stage.num_input, stage.num_target)
            for slot in range(stage.batch_size)]


def example_source(cfg: TrainConfig) -> ExampleSource:
    return ExampleSource(cfg.data, cfg.num_input, cfg.num_target, with_depth=cfg.lambda_depth > 0 or cfg.lambda_opacity > 0,
                         input_protocols=cfg.input_protocols, with_velocity=cfg.lambda_velocity > 0 or cfg.lambda_persistence > 0,
                         cache_dir=cfg.cache_dir)


def train(
    cfg: TrainConfig,
    resume: bool = True,
    progress: bool = True,
    stop_at_step: int | None = None,
    max_seconds: float | None = None,
) -> dict[str, Any]:
    """Train (or resume) per `cfg`; returns a summary dict. Rank 0 writes checkpoints, metrics.jsonl
    and TensorBoard logs under `cfg.out_dir`.

    `stop_at_step` / `max_seconds` end this run early (saving a resumable checkpoint) without
    changing the schedule, which always spans `cfg.steps`: a run split into pieces trains exactly
    like one uninterrupted run.
    """
    rank, world, device = _init_distributed()
    if cfg.device != "auto":
        device = torch.device(cfg.device)
    out_dir = Path(cfg.out_dir)
    torch.manual_seed(cfg.seed)  # identical initial weights on every process
    model = _initial_model(cfg).to(device)
    optimizer = torch.optim.AdamW(_param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(cfg))
    counters: Counter[str] = Counter()
    start = 0
    ckpt = latest_checkpoint(out_dir) if resume else None
    if ckpt is not None:
        state = load_training_state(ckpt, model, optimizer, scheduler)
        start, counters = state.step, Counter(state.counters)
        if rank == 0:
            log.info("resumed from %s at step %d", ckpt, start)
    ddp = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    source = example_source(cfg)
    perceptual = None
    if cfg.lambda_perceptual > 0 and cfg.perceptual_weights:
        from lrm4d_core.eval.perceptual import PerceptualLoss

        perceptual = PerceptualLoss.from_file(cfg.perceptual_weights).to(device)
    elif cfg.lambda_perceptual > 0 and rank == 0:
        log.warning("no perceptual_weights file given: the perceptual loss term is off (MSE%s only)",
                    " + SSIM" if cfg.lambda_ssim > 0 else "")
    writer = None
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "train_config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
        with contextlib.suppress(ImportError):
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(out_dir / "tensorboard"))
    provenance = {"train_config": cfg.to_dict(), "git_commit": _git_commit(), "world_size": world}
    bar = None
    if rank == 0 and progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.steps, initial=start, desc="train", unit="step", dynamic_ncols=True)
    bad_in_a_row = 0
    last: dict[str, float] = {}
    t_start = time.perf_counter()
    metrics_file = open(out_dir / "metrics.jsonl", "a") if rank == 0 else None
    try:
        end = min(cfg.steps, stop_at_step) if stop_at_step is not None else cfg.steps
        for step in range(start, end):
            if max_seconds is not None and time.perf_counter() - t_start > max_seconds:
                end = step
                break
            examples = draw_examples(source, cfg, step, rank)
            loss, terms, pred, target = training_step(model, ddp, examples, cfg, device, perceptual)
            bad = _all_max(0.0 if torch.isfinite(loss) else 1.0, world, device)
            grad_norm = math.nan
            # every Gaussian culled in every target (e.g. all behind the cameras) leaves no graph:
            # nothing to learn from, so all processes skip the update together (DDP lockstep)
            empty = not bad and bool(_all_max(0.0 if loss.requires_grad else 1.0, world, device))
            if empty:
                counters["empty_steps"] += 1
                log.warning("step %d: no Gaussian reached any target view, skipped (%d so far)", step, counters["empty_steps"])
            if not bad and not empty:
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip))
                bad = _all_max(0.0 if math.isfinite(grad_norm) else 1.0, world, device)
            if bad:
                counters["bad_steps"] += 1
                bad_in_a_row += 1
                optimizer.zero_grad(set_to_none=True)
                log.warning("step %d: non-finite loss or gradient, skipped (%d in a row)", step, bad_in_a_row)
                if bad_in_a_row >= cfg.max_bad_steps:
                    raise TooManyBadSteps(
                        f"{bad_in_a_row} steps in a row had a non-finite loss or gradient (last at step {step}); "
                        "lower the learning rate or check the data"
                    )
            elif not empty:
                bad_in_a_row = 0
                optimizer.step()
            scheduler.step()
            counters["steps"] += 1
            last = {"loss": loss.item(), **terms, "psnr": float(psnr(pred.detach(), target).mean()),
                    "grad_norm": grad_norm, "lr": scheduler.get_last_lr()[0]}
            if source.counters["bad_scenes"]:
                last["bad_scenes"] = source.counters["bad_scenes"]
            if rank == 0:
                metrics_file.write(json.dumps({"step": step + 1, **last}) + "\n")
                if (step + 1) % cfg.log_every == 0:
                    metrics_file.flush()
                    if writer is not None:
                        for k, v in last.items():
                            writer.add_scalar(f"train/{k}", v, step + 1)
                        writer.add_scalar("train/bad_steps", counters["bad_steps"], step + 1)
                if writer is not None and (step + 1) % cfg.image_every == 0:
                    grid = torch.cat([target[0], pred[0].detach().clamp(0, 1)], dim=-2)  # [Vt, 3, 2H, W]
                    writer.add_images("train/target_over_prediction", grid, step + 1)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{last['loss']:.4f}", psnr=f"{last['psnr']:.2f}")
                if (step + 1) % cfg.save_every == 0 or step + 1 == cfg.steps:
                    save_training_state(out_dir, step + 1, model, optimizer, scheduler, counters, provenance)
        if rank == 0 and end > start and end < cfg.steps and end % cfg.save_every != 0:
            save_training_state(out_dir, end, model, optimizer, scheduler, counters, provenance)
    finally:
        if bar is not None:
            bar.close()
        if metrics_file is not None:
            metrics_file.close()
        if writer is not None:
            writer.close()
    summary = {"steps": end, "resumed_from": start, "seconds": time.perf_counter() - t_start,
               "bad_steps": counters["bad_steps"], "empty_steps": counters["empty_steps"], "world_size": world,
               "bad_scenes": source.counters["bad_scenes"], "bad_draws": source.counters["bad_draws"],
               **{f"last_{k}": v for k, v in last.items()}}
    if rank == 0:
        print(f"trained steps {start}..{end} of {cfg.steps} on {world} process(es) in {summary['seconds']:.0f} s: "
              f"loss {last.get('loss', math.nan):.4f}, PSNR {last.get('psnr', math.nan):.2f} dB, "
              f"{counters['bad_steps']} bad steps, {source.counters['bad_scenes']} unreadable scenes skipped; "
              f"checkpoints in {out_dir / 'checkpoints'}")
    if world > 1:
        dist.barrier()
    return summary
