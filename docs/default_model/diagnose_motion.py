"""What a checkpoint predicts for motion and persistence on training draws (docs/default_model/experiments.md).

    python docs/default_model/diagnose_motion.py CHECKPOINT [--config docs/train_tiny.yaml] [--draws 10]
    python docs/default_model/diagnose_motion.py CHECKPOINT --overfit
    python docs/default_model/diagnose_motion.py CHECKPOINT --motion-radius 8   # block-matching velocity on

Per draw (the examples `lrm4d train` draws at steps 4000, 4037, ... of the config, 64x64, 12 inputs),
over the input pixels that see a surface: the share that moves (true speed above 0.05 model units
per model time), their true speed, the implied speed of their Gaussians (moving and static), and
the median temporal scale of the Gaussians in input-time gaps (the prior starts them at 1.5), and on
the moving pixels the median relative velocity error |v - v_true| / |v_true| and the share within 30%.
`--motion-radius R` overrides the checkpoint's `prior.motion.radius` (0 turns the block-matching
velocity of `model.motion_prior` off).

`--overfit`: trains every weight on one draw (the third, a driving scene, at 32x32 with 8 inputs)
on the balanced velocity loss alone for 60 Adam steps (lr 1e-3) and prints the implied speed of
its moving pixels: whether the parametrization can express the true motion at all.
"""

from __future__ import annotations

import argparse

import torch

from lrm4d_core.io.checkpoint import load_checkpoint
from lrm4d_core.model.prior import input_time_gap
from lrm4d_core.train.config import load_train_config
from lrm4d_core.train.loop import draw_examples, example_source, prepare_batch
from lrm4d_core.train.losses import implied_velocity, velocity_loss

MOVING = 0.05


def speeds(model, batch) -> dict[str, float]:
    out = model(batch.input_images, batch.input_cameras, batch.input_times, world_scale=batch.world_scale,
                 with_environment=True)
    B, V, H, W, _ = batch.input_velocities.shape
    v = implied_velocity(out.gaussians)[0, : V * H * W].detach()
    truth = batch.input_velocities.reshape(-1, 3)
    seen = torch.isfinite(truth).all(-1)
    moving = seen & (truth.nan_to_num(0).norm(dim=-1) > MOVING)
    gaps = out.gaussians.scales[0, : V * H * W, 3].detach() / input_time_gap(batch.input_times)[0]

    def mean(x: torch.Tensor) -> float:
        return float(x.mean()) if x.numel() else float("nan")

    error = (v[moving] - truth[moving]).norm(dim=-1) / truth[moving].norm(dim=-1)
    return {"moving_share": mean(moving[seen].float()), "true_speed": mean(truth[moving].norm(dim=-1)),
            "speed_moving": mean(v[moving].norm(dim=-1)), "speed_static": mean(v[seen & ~moving].norm(dim=-1)),
            "rel_error_median": float(error.median()) if error.numel() else float("nan"),
            "within_30pct": mean((error < 0.3).float()),
            "scale_t_gaps_median": float(gaps[seen].median())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--config", default="docs/train_tiny.yaml", help="training config whose data is drawn")
    parser.add_argument("--draws", type=int, default=10)
    parser.add_argument("--overfit", action="store_true")
    parser.add_argument("--motion-radius", type=int, default=None, help="override prior.motion.radius")
    args = parser.parse_args()
    torch.manual_seed(0)
    cfg = load_train_config(args.config)
    overrides = {} if args.motion_radius is None else {"prior": {"motion": {"radius": args.motion_radius}}}
    model, _, _ = load_checkpoint(args.checkpoint, **overrides)
    model = model.float()
    source = example_source(cfg)
    if not args.overfit:
        model.eval()
        for k in range(args.draws):
            examples = draw_examples(source, cfg, 4000 + 37 * k, 0)
            batch = prepare_batch(examples, model, torch.device("cpu"))
            with torch.no_grad():
                row = speeds(model, batch)
            print(f"draw {k} ({examples[0]['scene_id']}, {batch.input_times.shape[1]} inputs): " + ", ".join(f"{name} {value:.3f}" for name, value in row.items()), flush=True)
        return
    batch = prepare_batch([source.draw(0, 4000 + 2 * 37, 0, 0, (32, 32), 8, 2)], model, torch.device("cpu"))
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for step in range(61):
        if step % 10 == 0:
            row = speeds(model, batch)
            print(f"step {step}: true speed {row['true_speed']:.3f}, implied speed moving {row['speed_moving']:.3f}, "
                  f"static {row['speed_static']:.3f}", flush=True)
        if step == 60:
            break
        out = model(batch.input_images, batch.input_cameras, batch.input_times, world_scale=batch.world_scale,
                    with_environment=True)
        loss = velocity_loss(out.gaussians, batch.input_velocities, MOVING)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


if __name__ == "__main__":
    main()
