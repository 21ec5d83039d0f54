"""Training: DDP under torchrun (gloo) keeps ranks identical; resume replays an uninterrupted run."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lrm4d_core.data.synth import synth_dataset
from lrm4d_core.train.config import TrainConfig, load_train_config
from lrm4d_core.train.loop import TooManyBadSteps, train


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    synth_dataset(root / "object", scenes=2, rig="object", width=32, height=32, frames=4, seed=0, progress=False)
    synth_dataset(root / "driving", scenes=1, rig="driving", width=32, height=32, frames=4, seed=1, progress=False)
    return root


def config(tiny_data: Path, out: Path, **overrides) -> TrainConfig:
    base = dict(
        model={"preset": "tiny", "hidden": 32, "layers": 2, "heads": 2},
        data=[{"root": str(tiny_data / "object"), "weight": 2}, {"root": str(tiny_data / "driving"), "weight": 1}],
        out_dir=str(out), steps=6, warmup_steps=2, num_input=3, num_target=2, save_every=3, log_every=1,
        curriculum=[{"step": 0, "image_size": [16, 16], "batch_size": 1}, {"step": 4, "image_size": [32, 32], "batch_size": 1}],
    )
    base.update(overrides)
    return TrainConfig(**base)


def losses(out: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows}


def test_resume_replays_the_uninterrupted_run(tiny_data, tmp_path):
    whole = tmp_path / "whole"
    summary = train(config(tiny_data, whole), progress=False)
    assert summary["steps"] == 6 and math.isfinite(summary["last_loss"])
    split = tmp_path / "split"
    train(config(tiny_data, split), progress=False, stop_at_step=4)  # saves a resumable step-4 state
    assert (split / "checkpoints" / "step_0000004.train.safetensors").exists()
    train(config(tiny_data, split), progress=False)
    a, b = losses(whole), losses(split)
    assert sorted(a) == sorted(b) == list(range(1, 7))
    for step in a:
        assert a[step] == b[step], f"step {step}: {a[step]} != {b[step]}"
    wa = load_file(str(whole / "checkpoints" / "step_0000006.safetensors"))
    wb = load_file(str(split / "checkpoints" / "step_0000006.safetensors"))
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=0)
    # and training changed the weights
    w3 = load_file(str(whole / "checkpoints" / "step_0000003.safetensors"))
    assert any(not torch.equal(wa[k], w3[k]) for k in wa)


def test_nan_loss_steps_are_skipped_counted_and_stop_the_run(tiny_data, tmp_path, monkeypatch):
    import lrm4d_core.train.loop as loop

    real = loop.render_targets
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        out = real(*args, **kwargs)
        return out * float("nan") if calls["n"] in (2, 3) else out

    monkeypatch.setattr(loop, "render_targets", poisoned)
    summary = train(config(tiny_data, tmp_path / "nan"), progress=False)
    assert summary["bad_steps"] == 2 and math.isfinite(summary["last_loss"])

    # a render with no Gaussian in view has no graph: the step is skipped and counted, not fatal
    monkeypatch.setattr(loop, "render_targets", lambda *a, **k: real(*a, **k).detach())
    summary = train(config(tiny_data, tmp_path / "empty", steps=2), progress=False)
    assert summary["empty_steps"] == 2 and summary["bad_steps"] == 0 and summary["steps"] == 2

    monkeypatch.setattr(loop, "render_targets", lambda *a, **k: real(*a, **k) * float("nan"))
    with pytest.raises(TooManyBadSteps, match="3 steps in a row"):
        train(config(tiny_data, tmp_path / "nan2", max_bad_steps=3), progress=False)


def test_config_file_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [{root: x}]\nstepz: 3\n")
    with pytest.raises(ValueError, match="unknown keys \\['stepz'\\]"):
        load_train_config(bad)
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"data": [{"root": "x"}], "steps": 9}))
    assert load_train_config(good, steps=11).steps == 11
    with pytest.raises(ValueError, match="at least one dataset"):
        TrainConfig()


def test_two_processes_under_torchrun_end_identical(tiny_data, tmp_path):
    cfg = config(tiny_data, tmp_path / "ddp", steps=3, save_every=3)
    cfg_path = tmp_path / "ddp.json"
    cfg_path.write_text(json.dumps(cfg.to_dict()))
    script = tmp_path / "ddp_probe.py"
    script.write_text(
        "import hashlib, json, os, sys, torch\n"
        "from lrm4d_core.train.config import load_train_config\n"
        "import lrm4d_core.train.loop as loop\n"
        "from lrm4d_core.train.examples import ExampleSource\n"
        "seen = {'params': None, 'draws': []}\n"
        "real_step, real_draw = torch.optim.AdamW.step, ExampleSource.draw\n"
        "def step_spy(self, *a, **k):\n"
        "    out = real_step(self, *a, **k)\n"
        "    seen['params'] = [p.detach().clone() for g in self.param_groups for p in g['params']]\n"
        "    return out\n"
        "def draw_spy(self, *a, **k):\n"
        "    ex = real_draw(self, *a, **k)\n"
        "    seen['draws'].append([ex['scene_id'], ex['input_views'].tolist(), ex['input_frames'].tolist()])\n"
        "    return ex\n"
        "torch.optim.AdamW.step, ExampleSource.draw = step_spy, draw_spy\n"
        "loop.train(load_train_config(sys.argv[1]), progress=False)\n"
        "h = hashlib.sha256(b''.join(p.numpy().tobytes() for p in seen['params'])).hexdigest()\n"
        "out = {'sha': h, 'draws': seen['draws']}\n"
        "open(os.path.join(sys.argv[2], 'rank%s.json' % os.environ['RANK']), 'w').write(json.dumps(out))\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
         str(script), str(cfg_path), str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0 = json.loads((tmp_path / "rank0.json").read_text())
    r1 = json.loads((tmp_path / "rank1.json").read_text())
    assert r0["sha"] == r1["sha"]  # gradients were averaged: identical weights on both ranks
    assert r0["draws"] != r1["draws"]  # from different data, so that says something
    assert len(r0["draws"]) == 3


def test_depth_loss_matches_numpy_and_skips_missing_depth():
    """Camera-frame z of each pixel Gaussian vs its pixel's depth, against a numpy reference."""
    import numpy as np

    from lrm4d_core.cameras import Cameras
    from lrm4d_core.gaussians import Gaussians4D
    from lrm4d_core.train.loop import depth_loss

    rng = np.random.default_rng(0)
    B, V, H, W, extra = 2, 3, 4, 5, 7
    c2w = np.tile(np.eye(4), (B * V, 1, 1))
    for i in range(B * V):
        q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        c2w[i, :3, :3] = q * np.sign(np.linalg.det(q))
        c2w[i, :3, 3] = rng.normal(size=3)
    K = np.tile(np.array([[5.0, 0, 2.5], [0, 5.0, 2.0], [0, 0, 1]]), (B * V, 1, 1))
    cams = Cameras(torch.tensor(K), torch.tensor(c2w), W, H)
    N = V * H * W + extra
    means = rng.normal(size=(B, N, 3))
    depths = rng.uniform(0.5, 3.0, size=(B, V, H, W))
    depths[0, 1, 2, :] = np.inf  # nothing hit
    depths[1, 0, 0, 0] = 9.0  # beyond far
    g = Gaussians4D(
        means=torch.tensor(np.concatenate([means, np.zeros((B, N, 1))], -1), requires_grad=True),
        scales=torch.ones(B, N, 4), q_left=torch.tensor([1.0, 0, 0, 0]).expand(B, N, 4),
        q_right=torch.tensor([1.0, 0, 0, 0]).expand(B, N, 4), opacities=torch.ones(B, N), colors=torch.ones(B, N, 3),
    )
    errors = []
    for b in range(B):
        for v in range(V):
            R, c = c2w[b * V + v, :3, :3], c2w[b * V + v, :3, 3]
            for y in range(H):
                for x in range(W):
                    d = depths[b, v, y, x]
                    if np.isfinite(d) and d < 4.5:
                        z = ((means[b, v * H * W + y * W + x] - c) @ R)[2]
                        errors.append(abs(z - d))
    loss = depth_loss(g, cams, torch.tensor(depths), far=4.5)
    assert len(errors) == B * V * H * W - W - 1
    assert abs(loss.item() - np.mean(errors)) < 1e-9
    loss.backward()
    assert g.means.grad[:, V * H * W:].abs().sum() == 0  # free Gaussians have no depth pixel
    assert g.means.grad[0, 1 * H * W + 2 * W].abs().sum() == 0  # a pixel without depth gets no pull


def test_training_with_depth_loss_and_protocol_mix(tiny_data, tmp_path):
    from lrm4d_core.train.config import DataSource
    from lrm4d_core.train.examples import ExampleSource

    src = ExampleSource([DataSource(str(tiny_data / "object")), DataSource(str(tiny_data / "driving"))], num_input=3,
                        num_target=2, with_depth=True, input_protocols={"interpolation": 1.0})
    kinds = set()
    for step in range(12):
        ex = src.draw(0, step, 0, 0, (16, 16))
        frames, views = ex["input_frames"].tolist(), ex["input_views"].tolist()
        assert ex["input_depths"].shape == (len(frames), 16, 16)
        if "object" in str(ex["scene_id"]):  # SPEC §4 (b): canonical views 0 and 2 on even frames
            kinds.add("object")
            assert sorted(set(views)) == [0, 2] and all(f % 2 == 0 for f in frames) and len(frames) == 4
        else:  # the driving rig has no canonical views: its evaluation layout, one camera per frame
            kinds.add("driving")
            assert sorted(frames) == [0, 1, 2, 3]
    assert kinds == {"object", "driving"}
    # SPEC §4 (d) as a training layout: the first random-orbit camera at every frame on object rigs,
    # the surround layout elsewhere; no scene is taken for unreadable
    orbit = ExampleSource([DataSource(str(tiny_data / "object")), DataSource(str(tiny_data / "driving"))], num_input=3,
                          num_target=2, input_protocols={"random_orbit": 1.0})
    kinds = set()
    for step in range(12):
        ex = orbit.draw(0, step, 0, 0, (16, 16))
        assert ex["input_frames"].tolist() == [0, 1, 2, 3]
        if "object" in str(ex["scene_id"]):
            kinds.add("object")
            meta = orbit.dataset(0, (16, 16)).meta(0)
            first_random = [v["index"] for v in meta.views if v["kind"] == "random"][0]
            assert set(ex["input_views"].tolist()) == {first_random}
        else:
            kinds.add("driving")
    assert kinds == {"object", "driving"} and not orbit.bad
    summary = train(config(tiny_data, tmp_path / "mix", steps=3, lambda_depth=0.5, lambda_opacity=0.1, lambda_velocity=0.2,
                           velocity_balance=True, lambda_persistence=0.05, input_targets=1, cache_dir=str(tmp_path / "cache"),
                           input_protocols={"random": 1, "alternating": 1, "interpolation": 1, "random_orbit": 1}),
                    progress=False)
    assert summary["steps"] == 3 and math.isfinite(summary["last_loss"])
    assert all(math.isfinite(summary[f"last_{k}"]) for k in ("depth", "opacity", "velocity", "persistence"))
    assert any((tmp_path / "cache").rglob("velocity.npy"))  # the decoded scenes were cached and read from there
    with pytest.raises(ValueError, match="input_protocols"):
        config(tiny_data, tmp_path / "x", input_protocols={"sideways": 1})


def test_init_from_starts_at_the_checkpoint_and_checks_the_architecture(tiny_data, tmp_path):
    train(config(tiny_data, tmp_path / "a", steps=2, save_every=2), progress=False)
    start = tmp_path / "a" / "checkpoints" / "step_0000002.safetensors"
    # lr 0: the fine-tuned weights must be the checkpoint's, bit for bit
    train(config(tiny_data, tmp_path / "b", steps=1, save_every=1, lr=0.0, init_from=str(start)), progress=False)
    wa, wb = load_file(str(start)), load_file(str(tmp_path / "b" / "checkpoints" / "step_0000001.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    with pytest.raises(ValueError, match="differs"):
        train(config(tiny_data, tmp_path / "c", steps=1, init_from=str(start),
                     model={"preset": "tiny", "hidden": 64, "layers": 2, "heads": 2}), progress=False)


def test_an_unreadable_scene_is_skipped_and_counted_never_stopping_the_run(tiny_data, tmp_path):
    """A training set with one corrupt image and one deleted image: the run completes, says which
    scenes it skipped, and a resumed run draws exactly what an uninterrupted one does."""
    import shutil

    from lrm4d_core.train.config import DataSource
    from lrm4d_core.train.examples import ExampleSource

    data = tmp_path / "data"
    shutil.copytree(tiny_data / "object", data / "object")
    shutil.copytree(tiny_data / "driving", data / "driving")
    (data / "object" / "object_00000" / "images" / "v00_f000.png").write_bytes(b"not a png")
    (data / "driving" / "driving_00000" / "images" / "v02_f001.png").unlink()
    src = ExampleSource([DataSource(str(data / "object")), DataSource(str(data / "driving"))], num_input=3, num_target=2)
    for step in range(40):  # a scene is found bad when a draw first touches its bad file (or at once: missing file)
        src.draw(0, step, 0, 0, (16, 16))
    assert src.counters["bad_scenes"] == 2 and src.counters["bad_draws"] >= 2 and len(src.bad) == 2
    assert any("file not found" in why for why in src.bad.values())
    scenes = {str(src.draw(0, step, 0, 0, (16, 16))["scene_id"]) for step in range(40, 60)}
    assert scenes == {"object_00001"}  # the only readable scene is all that is drawn from now on
    cfg = dict(data=[{"root": str(data / "object"), "weight": 2}, {"root": str(data / "driving"), "weight": 1}])
    summary = train(config(tiny_data, tmp_path / "run", steps=4, **cfg), progress=False)
    assert summary["steps"] == 4 and summary["bad_scenes"] >= 1 and math.isfinite(summary["last_loss"])
    train(config(tiny_data, tmp_path / "split", steps=4, **cfg), progress=False, stop_at_step=2)
    resumed = train(config(tiny_data, tmp_path / "split", steps=4, **cfg), progress=False)
    assert resumed["last_loss"] == pytest.approx(summary["last_loss"], rel=1e-5)


def test_input_targets_append_each_examples_own_input_views(tiny_data):
    from lrm4d_core.train.config import DataSource
    from lrm4d_core.train.examples import ExampleSource
    from lrm4d_core.train.loop import prepare_batch, with_input_targets
    from lrm4d_core.model.config import preset
    from lrm4d_core.model.lrm4d import LRM4D

    src = ExampleSource([DataSource(str(tiny_data / "object"))], num_input=4, num_target=2)
    examples = [src.draw(0, 0, 0, slot, (16, 16)) for slot in range(2)]
    model = LRM4D(preset("tiny", hidden=32, layers=1, heads=2))
    batch = prepare_batch(examples, model, torch.device("cpu"))
    out = with_input_targets(batch, 2)
    assert out.target_images.shape == (2, 4, 3, 16, 16) and len(out.target_cameras) == 8
    for b in range(2):
        # the original targets first, then inputs 0 and 3 (evenly spaced), each with its own camera and time
        assert torch.equal(out.target_images[b, :2], batch.target_images[b])
        for j, i in ((2, 0), (3, 3)):
            assert torch.equal(out.target_images[b, j], batch.input_images[b, i])
            assert out.target_times[b, j] == batch.input_times[b, i]
            assert torch.equal(out.target_cameras.cam_to_world[b * 4 + j], batch.input_cameras.cam_to_world[b * 4 + i])
        assert torch.equal(out.target_cameras.cam_to_world[b * 4:b * 4 + 2], batch.target_cameras.cam_to_world[b * 2:b * 2 + 2])
    assert with_input_targets(batch, 0) is batch
    with pytest.raises(ValueError, match="input_targets"):
        config(tiny_data, Path("unused"), input_targets=-1)


def test_batches_carry_the_scenes_ground_into_the_model_box(tiny_data):
    """Driving scenes record a horizontal ground (z = 0), object scenes none: the batch holds the
    ground's height in each example's model box, NaN where there is none, and the model snaps to it."""
    from lrm4d_core.cameras import Cameras
    from lrm4d_core.model.api import estimate_scene_normalization
    from lrm4d_core.model.config import preset
    from lrm4d_core.model.lrm4d import LRM4D
    from lrm4d_core.train.config import DataSource
    from lrm4d_core.train.examples import ExampleSource
    from lrm4d_core.train.loop import prepare_batch

    model = LRM4D(preset("tiny", hidden=32, layers=1, heads=2, prior={"ground_snap": 0.2}))
    for kind, has_ground in (("driving", True), ("object", False)):
        src = ExampleSource([DataSource(str(tiny_data / kind))], num_input=4, num_target=2)
        ex = src.draw(0, 0, 0, 0, (16, 16))
        batch = prepare_batch([ex], model, torch.device("cpu"))
        if not has_ground:
            assert torch.isnan(batch.ground_height).all()
            continue
        cams = Cameras(ex["input_K"].double(), ex["input_cam_to_world"].double(), 16, 16)
        scene = estimate_scene_normalization(cams, model.config)
        assert float(ex["ground_z"]) == 0.0
        assert batch.ground_height[0].item() == pytest.approx(-float(scene.center[2]) / scene.scale, abs=1e-6)
        with torch.no_grad():
            out = model(batch.input_images, batch.input_cameras, batch.input_times, world_scale=batch.world_scale,
                        ground_height=batch.ground_height)
        on_ground = (out.means[0, :, 2] - batch.ground_height[0]).abs() < 1e-5
        assert int(on_ground.sum()) > 0


def test_a_model_with_view_dependent_opacity_trains_with_it(tiny_data, tmp_path, monkeypatch):
    """The model's `view_dependence` reaches the target renders, with each example's own input
    cameras (batches of two: the centres are split per example), and the run stays finite."""
    import lrm4d_core.train.loop as loop

    real, seen = loop.render_targets, []

    def spy(gaussians, cameras, times, background, environment=None, view_weighting=(0.0, 15.0), input_centres=None,
            pixels_per_view=0):
        seen.append((view_weighting, input_centres.shape, pixels_per_view))
        return real(gaussians, cameras, times, background, environment, view_weighting, input_centres, pixels_per_view)

    monkeypatch.setattr(loop, "render_targets", spy)
    cfg = config(tiny_data, tmp_path / "vd", steps=2,
                 model={"preset": "tiny", "hidden": 32, "layers": 2, "heads": 2, "parametrization": "prior",
                        "view_dependence": 0.5, "view_dependence_deg": 20.0},
                 curriculum=[{"step": 0, "image_size": [16, 16], "batch_size": 2}])
    summary = train(cfg, progress=False)
    assert math.isfinite(summary["last_loss"])
    assert seen and all(s == ((0.5, 20.0), torch.Size([2, 3, 3]), 16 * 16) for s in seen)


def test_as_shipped_copies_the_inference_config_and_keeps_the_weights(tiny_data, tmp_path):
    """docs/default_model/as_shipped.py (used by bench/gpu_run.sh): a freshly trained checkpoint
    gets the reference's inference-time fields, every other config field stays the trained one's,
    and its weights are the trained ones cast to float16."""
    import importlib.util
    from dataclasses import replace

    from lrm4d_core.io.checkpoint import load_checkpoint, save_checkpoint
    from lrm4d_core.model.lrm4d import LRM4D
    from lrm4d_core.model.own_view import OwnViewConstants
    from lrm4d_core.model.prior import PriorConstants

    spec = importlib.util.spec_from_file_location("_as_shipped", Path(__file__).parents[1] / "docs/default_model/as_shipped.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    train(config(tiny_data, tmp_path / "run", steps=1, save_every=1), progress=False)
    trained = tmp_path / "run" / "checkpoints" / "step_0000001.safetensors"
    model, cfg, _ = load_checkpoint(trained)
    reference = tmp_path / "reference.safetensors"  # another architecture: only config fields travel
    ref_cfg = replace(cfg, hidden=48, prior=PriorConstants(ground_snap=0.3), view_dependence=0.5, nearest_copy=0.6,
                      own_view=OwnViewConstants(angle_deg=12.0), facing_inward=not cfg.facing_inward)
    save_checkpoint(reference, LRM4D(ref_cfg), ref_cfg)
    out = tmp_path / "shipped.safetensors"
    module.as_shipped(trained, out, reference)
    got, got_cfg, _ = load_checkpoint(out)
    for name in module.INFERENCE_FIELDS:
        assert getattr(got_cfg, name) == getattr(ref_cfg, name)
    assert got_cfg.hidden == cfg.hidden and got_cfg.facing_inward == cfg.facing_inward
    for name, tensor in model.state_dict().items():
        expected = tensor.half().to(tensor.dtype) if tensor.is_floating_point() else tensor
        assert torch.equal(got.state_dict()[name], expected), name
    assert {t.dtype for t in load_file(str(out)).values() if t.is_floating_point()} == {torch.float16}


def test_inference_steps_in_training_decode_as_inference_does_and_train(tiny_data, tmp_path, monkeypatch):
    """`inference_steps: true` makes a model in train mode decode exactly as in eval mode (the
    thickness, an inference-time step, acts on the object views' plain background), with the
    network's own decoding beside it for the input-pixel losses; gradients reach the network
    through it, and a run with it decodes every step both ways."""
    import lrm4d_core.model.lrm4d as lrm4d
    import lrm4d_core.train.loop as loop
    from lrm4d_core.model.config import preset
    from lrm4d_core.model.lrm4d import LRM4D
    from lrm4d_core.train.config import DataSource
    from lrm4d_core.train.examples import ExampleSource
    from lrm4d_core.train.loop import prepare_batch

    torch.manual_seed(0)
    model = LRM4D(preset("tiny", hidden=32, layers=1, heads=2, parametrization="prior",
                         prior={"thickness": {"depth": 1.0}}))
    ex = ExampleSource([DataSource(str(tiny_data / "object"))], num_input=4, num_target=2).draw(0, 0, 0, 0, (16, 16))
    batch = prepare_batch([ex], model, torch.device("cpu"))

    def decode(train_mode: bool, steps: bool):
        model.train(train_mode)
        model.inference_steps_in_training = steps
        return model(batch.input_images, batch.input_cameras, batch.input_times, world_scale=batch.world_scale,
                     with_environment=True)

    with torch.no_grad():
        inferred, plain_train, train_as_inferred = decode(False, False), decode(True, False), decode(True, True)
    assert inferred.own is None and plain_train.own is None
    assert not torch.allclose(plain_train.gaussians.covariance(), inferred.gaussians.covariance())  # the thickness acted
    for name in ("means", "scales", "opacities", "colors", "q_left", "q_right"):
        assert torch.equal(getattr(train_as_inferred.gaussians, name), getattr(inferred.gaussians, name)), name
        assert torch.equal(getattr(train_as_inferred.own, name), getattr(plain_train.gaussians, name)), name
    decode(True, True).gaussians.means.sum().backward()
    assert model.pixel_head.weight.grad is not None and model.pixel_head.weight.grad.abs().sum() > 0

    real, decoded, depth_inputs = lrm4d.decode_prior, [], []

    def spy(*a, **k):
        decoded.append((k["inference"], real(*a, **k)))
        return decoded[-1][1]

    monkeypatch.setattr(lrm4d, "decode_prior", spy)
    real_depth = loop.depth_loss
    monkeypatch.setattr(loop, "depth_loss", lambda g, *a, **k: (depth_inputs.append(g), real_depth(g, *a, **k))[1])
    cfg = config(tiny_data, tmp_path / "run", steps=2, inference_steps=True, lambda_depth=1.0,
                 model={"preset": "tiny", "hidden": 32, "layers": 2, "heads": 2, "parametrization": "prior",
                        "prior": {"thickness": {"depth": 1.0}}})
    assert math.isfinite(train(cfg, progress=False)["last_loss"])
    assert [f for f, _ in decoded] == [True, False] * 2 and len(depth_inputs) == 2
    for step, g in enumerate(depth_inputs):  # the depth loss reads the decoding without the steps
        assert torch.equal(g.means, decoded[2 * step + 1][1].means)
