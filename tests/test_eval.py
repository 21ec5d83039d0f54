"""`lrm4d eval`: protocols, baselines, metrics and outputs on a tiny synthetic split with a tiny
random model (fast; fine under OMP_NUM_THREADS=1)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from lrm4d_core import cli
from lrm4d_core.data.dataset import PROTOCOLS, evaluation_targets, protocol_views
from lrm4d_core.data.format import load_scene
from lrm4d_core.data.synth import synth_dataset
from lrm4d_core.eval import baselines, run
from lrm4d_core.eval.baselines import METHODS, example_from_batch, per_frame_groups, run_no_time, run_per_frame
from lrm4d_core.eval.references import REFERENCES
from lrm4d_core.eval.metrics import psnr, ssim
from lrm4d_core.eval.perceptual import VGG16Features
from lrm4d_core.eval.protocols import EvalDataset, nearest_input_frame, scene_protocols
from lrm4d_core.eval.report import json_safe
from lrm4d_core.io.checkpoint import save_checkpoint
from lrm4d_core.model.api import load_model

WHITE = torch.ones(3)


def strict_json(path: Path) -> dict:
    """Parse as strict JSON: NaN/Infinity literals are an error."""
    def bad(token):
        raise ValueError(f"non-standard JSON constant {token}")

    return json.loads(path.read_text(), parse_constant=bad)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("evaldata")
    synth_dataset(root / "object", scenes=2, rig="object", width=16, height=16, frames=4, seed=0, progress=False)
    synth_dataset(root / "driving", scenes=1, rig="driving", width=16, height=16, frames=4, seed=1, progress=False)
    return root


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return load_model(preset="tiny", device="cpu", hidden=32, layers=2, heads=2, image_size=(16, 16))


@pytest.fixture(scope="module")
def checkpoint(model, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "tiny_random.safetensors"
    save_checkpoint(path, model, provenance={"note": "random test model"})
    return path


@pytest.fixture(scope="module")
def full_run(data, checkpoint, tmp_path_factory):
    """The CLI over both splits, every protocol, all four methods."""
    out = tmp_path_factory.mktemp("evalout")
    rc = cli.main(["eval", "--checkpoint", str(checkpoint), "--data", str(data / "object"), "--data", str(data / "driving"),
                   "--out", str(out), "--fit-gaussians", "64", "--device", "cpu"])
    return rc, out


def example(data: Path, protocol: str, index: int = 0, rig: str = "object"):
    ds = EvalDataset(data / rig, protocol, seed=0)
    return ds, example_from_batch(ds[index])


# ------------------------------------------------------------------------------------- protocols
def test_protocol_sets_match_the_dataset_definitions(data):
    assert run.PROTOCOL_NAMES == PROTOCOLS
    for protocol in PROTOCOLS:
        ds = EvalDataset(data / "object", protocol, seed=3)
        for i in range(len(ds)):
            meta = ds.meta(i)
            rng_in, rng_tgt = ds.rng(i).spawn(2)
            inputs, targets = ds.sample(i)
            assert sorted(inputs) == sorted(protocol_views(protocol, meta, rng_in))
            assert sorted(targets) == sorted(evaluation_targets(meta, rng_tgt))
            batch = ds[i]
            assert list(zip(batch["input_views"].tolist(), batch["input_frames"].tolist())) == inputs
    # protocol (d) on the object rig: one random-orbit view per frame, never a canonical one
    ds = EvalDataset(data / "object", "random", seed=0)
    meta = ds.meta(0)
    inputs, _ = ds.sample(0)
    assert [f for _, f in inputs] == list(range(meta.num_frames))
    assert all(meta.views[v]["kind"] == "random" for v, _ in inputs)


def test_driving_scenes_get_only_the_surround_random_protocol(data):
    meta = load_scene(next((data / "driving").iterdir()))
    assert scene_protocols(meta) == ("random",)
    assert scene_protocols(load_scene(data / "object" / "object_00000")) == PROTOCOLS
    ds = EvalDataset(data / "driving", "random", seed=0)
    inputs, targets = ds.sample(0)
    assert sorted(f for _, f in inputs) == list(range(meta.num_frames))  # one camera per frame
    assert not set(inputs) & set(targets)
    assert len(inputs) + len(targets) == len(meta.images)
    with pytest.raises(ValueError, match="only 'random' applies"):
        EvalDataset(data / "driving", "alternating").sample(0)


def test_nearest_input_frame_and_per_frame_groups():
    assert nearest_input_frame(3, [0, 2, 4]) == 2  # tie between 2 and 4 -> earlier
    assert nearest_input_frame(1, [0, 2]) == 0
    assert nearest_input_frame(5, [0, 2]) == 2
    assert nearest_input_frame(2, [2, 2, 4]) == 2
    groups = per_frame_groups(torch.tensor([0, 0, 2, 2]), torch.tensor([0, 1, 2, 3, 1]))
    assert groups == {0: [0, 1, 4], 2: [2, 3]}


# ------------------------------------------------------------------------------------- baselines
def test_no_time_baseline_is_exactly_time_invariant(data, model, monkeypatch):
    calls = []
    real = baselines._api.reconstruct
    monkeypatch.setattr(baselines._api, "reconstruct", lambda *a, **k: calls.append(a[3].clone()) or real(*a, **k))
    _, ex = example(data, "alternating")
    preds, info = run_no_time(model, ex, WHITE)
    assert len(calls) == 1 and torch.unique(calls[0]).numel() == 1  # every input time the same
    canonical0 = [j for j, (v, _) in enumerate(ex.target_pairs) if v == 0]  # a static camera at every frame
    frames = {ex.target_pairs[j][1] for j in canonical0}
    assert len(frames) == 4
    for j in canonical0[1:]:
        assert torch.equal(preds[j], preds[canonical0[0]])
    assert info["static_time"] == pytest.approx(0.5 * float(ex.times.min() + ex.times.max()))
    # not trivially so: the static cloud is visible, and the 4D model's renders of that view do move
    assert (preds[canonical0[0]] - 1).abs().max() > 0.05
    moving, _, _, _ = baselines.run_model(model, ex, WHITE)
    assert any(not torch.equal(moving[j], moving[canonical0[0]]) for j in canonical0[1:])


@pytest.mark.parametrize("protocol", ["alternating", "interpolation"])
def test_per_frame_baseline_uses_only_the_target_frame_inputs(data, model, monkeypatch, protocol):
    calls = []
    real = baselines._api.reconstruct

    def spy(model_, images, cameras, times, **kwargs):
        calls.append((images.clone(), times.clone(), kwargs.get("scene")))
        return real(model_, images, cameras, times, **kwargs)

    monkeypatch.setattr(baselines._api, "reconstruct", spy)
    _, ex = example(data, protocol)
    frame_time = {int(f): float(t) for f, t in zip(ex.frames, ex.times)}
    scene = baselines._api.estimate_scene_normalization(ex.cameras, model.config)
    preds, info = run_per_frame(model, ex, WHITE, scene)
    used = {nearest_input_frame(f, ex.frames.tolist()) for f in ex.target_frames.tolist()}
    assert info["reconstructions"] == len(calls) == len(used)
    seen_times = set()
    for images, times, sc in calls:
        assert torch.unique(times).numel() == 1, "a per-frame reconstruction mixed frames"
        t = float(times[0])
        frame = next(f for f, ft in frame_time.items() if ft == t)
        idx = (ex.frames == frame).nonzero().flatten()
        assert torch.equal(images, ex.images[idx])  # exactly that frame's inputs, all of them
        assert sc is scene
        seen_times.add(t)
    assert seen_times == {frame_time[f] for f in used}
    if protocol == "alternating":  # every frame has an input: each target uses its own frame
        assert used == set(ex.target_frames.tolist())
    else:  # inputs on even frames only: odd targets fall back to the earlier frame
        assert used == {0, 2}
    assert preds.shape == ex.target_images.shape and torch.isfinite(preds).all()


def test_fit_budget_matches_the_model_time_or_the_given_seconds(data, model):
    _, ex = example(data, "two_rotating")
    _, info, _, _ = baselines.evaluate_example(model, ex, WHITE, METHODS, "match", fit_gaussians=32)
    assert info["fit"]["budget_s"] == info["model"]["seconds"]
    assert isinstance(info["fit"]["steps"], int) and info["fit"]["steps"] >= 0
    preds, info, _, _ = baselines.evaluate_example(model, ex, WHITE, ("fit",), 0.3, fit_gaussians=32)
    assert info["fit"]["budget_s"] == 0.3 and info["fit"]["steps"] >= 1
    assert set(preds) == {"fit"} and preds["fit"].shape == ex.target_images.shape


# ------------------------------------------------------------------------------------- outputs
def test_cli_writes_json_markdown_and_figure(full_run, data, capsys):
    rc, out = full_run
    assert rc == 0
    res = strict_json(out / "eval.json")
    assert res["methods"] == list(METHODS) + list(REFERENCES)
    assert set(res["groups"]) == {"object", "driving"}
    obj, drv = res["groups"]["object"], res["groups"]["driving"]
    assert obj["protocols"] == list(PROTOCOLS) and obj["num_scenes"] == 2
    assert drv["protocols"] == ["random"] and drv["variant"] == "surround"
    assert drv["skipped_protocols"] == ["alternating", "interpolation", "two_rotating"]
    for group in (obj, drv):
        for p in group["protocols"]:
            r = group["results"][p]
            assert r["num_scenes"] == group["num_scenes"]
            for m in METHODS:
                cell = r["methods"][m]
                assert isinstance(cell["psnr"], float) and math.isfinite(cell["psnr"]) and -1 <= cell["ssim"] <= 1
                assert cell["lpips"] is None
                assert cell["num_images"] == r["timing"]["num_targets"] * group["num_scenes"]
            assert r["timing"]["fit_budget_s"] == pytest.approx(r["timing"]["model_seconds"])
            assert math.isfinite(r["methods"]["model"]["input_psnr"])  # the inputs re-rendered
            heur, true = r["methods"]["splats_heuristic"], r["methods"]["splats_true_depth"]
            # the references' settings are chosen by PSNR: a narrow temporal width can leave held-out
            # pixels empty (a depth miss), so true depth need not beat the heuristic on delta here
            assert 0 <= heur["delta_1_25"] <= 1 and true["delta_1_25"] > 0.5
            assert true["surface_fraction"] > 0.5 and r["reference_settings"]
            assert set(r["model_beats"]) == {"no_time", "per_frame"}
    assert len(res["examples"]) == 2 * 4 + 1
    for row in res["examples"]:  # per-image numbers for every target and method
        assert set(row["methods"]) == set(METHODS) | set(REFERENCES)
        assert all(len(v) == len(row["targets"]) for m in row["methods"].values() for v in m.values())
        if row["group"] == "object":  # inputs as the dataset defines the protocol
            ds = EvalDataset(data / "object", row["protocol"], seed=0)
            i = [d.name for d in ds.scene_dirs].index(Path(row["scene_dir"]).name)
            assert [tuple(x) for x in row["inputs"]] == ds.sample(i)[0]
    assert res["provenance"]["checkpoint_sha256"] and res["provenance"]["model"]["parameters"] > 0
    assert res["provenance"]["checkpoint_provenance"] == {"note": "random test model"}

    md = (out / "eval.md").read_text()
    header = "| method | " + " | ".join(PROTOCOLS) + " |"
    assert header in md and "| method | random |" in md
    for label in res["method_labels"].values():
        rows = [line for line in md.splitlines() if line.startswith(f"| {label} |")]
        assert len(rows) >= 6  # object and driving: all targets, held-out targets, foreground
        assert all(" / " in c for c in rows[0].strip("|").split("|")[1:])

    with Image.open(out / "eval.png") as im:
        assert im.mode == "RGB" and im.width > 400 and im.height > 6 * 96
    assert res["figure"]["protocol"] == "interpolation"


def test_perfect_predictions_give_inf_psnr_and_unit_ssim_in_strict_json(data, model, tmp_path, monkeypatch):
    gt = torch.rand(2, 3, 16, 16, dtype=torch.float64)
    assert torch.isinf(psnr(gt, gt)).all() and torch.allclose(ssim(gt, gt), torch.ones(2, dtype=torch.float64))
    assert json.loads(json.dumps(json_safe({"a": math.inf, "b": [-math.inf, math.nan, 1.5]}), allow_nan=False)) == {
        "a": "inf", "b": ["-inf", "nan", 1.5]}

    real = baselines.evaluate_example

    def oracle(model_, ex, background, methods, *args, **kwargs):
        _, _, rec, depth = real(model_, ex, background, ("model",))
        return {m: ex.target_images.clone() for m in methods}, {m: {"seconds": 0.0} for m in methods}, rec, depth

    monkeypatch.setattr(baselines, "evaluate_example", oracle)
    res = run.evaluate(model, data / "object", protocols=["alternating"], max_scenes=1, out_dir=tmp_path, progress=False)
    cell = res["groups"]["object"]["results"]["alternating"]["methods"]["model"]
    assert math.isinf(cell["psnr"]) and cell["ssim"] == pytest.approx(1.0)
    saved = strict_json(tmp_path / "eval.json")["groups"]["object"]["results"]["alternating"]["methods"]["model"]
    assert saved["psnr"] == "inf" and saved["ssim"] == pytest.approx(1.0)
    assert "| 4D-LRM (ours) | inf / 1.000 |" in (tmp_path / "eval.md").read_text()
    assert "model/no_time/per_frame/fit/blank/mean_color/splats_heuristic/splats_true_depth: object/alternating inf/inf/inf/inf/" in res["summary"]


def _fake_lpips_files(tmp_path: Path) -> tuple[Path, Path]:
    torch.manual_seed(0)
    net = VGG16Features()
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.05)
    vgg = tmp_path / "vgg16.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(vgg))
    lin = tmp_path / "lpips_lin.safetensors"
    save_file({f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1) for k, c in enumerate((64, 128, 256, 512, 512))}, str(lin))
    return vgg, lin


def test_lpips_when_weights_are_given(data, checkpoint, tmp_path, capsys):
    vgg, lin = _fake_lpips_files(tmp_path)
    out = tmp_path / "out"
    rc = cli.main(["eval", "--checkpoint", str(checkpoint), "--data", str(data / "object"), "--out", str(out),
                   "--protocols", "alternating", "--max-scenes", "1", "--no-fit", "--no-figure",
                   "--lpips-vgg", str(vgg), "--lpips-lin", str(lin)])
    assert rc == 0
    assert capsys.readouterr().out.startswith("eval: 1 examples")
    res = strict_json(out / "eval.json")
    assert res["methods"] == ["model", "no_time", "per_frame", *REFERENCES] and res["config"]["lpips"]
    methods = res["groups"]["object"]["results"]["alternating"]["methods"]
    for m in res["methods"]:
        assert isinstance(methods[m]["lpips"], float) and methods[m]["lpips"] > 0
    rows = [line for line in (out / "eval.md").read_text().splitlines() if line.startswith("| 4D-LRM (ours) |")]
    assert len(rows[0].split("|")[2].split(" / ")) == 3  # PSNR / SSIM / LPIPS
    assert not (out / "eval.png").exists()


def test_cli_usage_errors_and_help_without_torch(data, tmp_path, capsys):
    assert cli.main(["eval", "--data", str(data), "--out", str(tmp_path), "--lpips-vgg", "x"]) == 2
    assert cli.main(["eval", "--data", str(data), "--out", str(tmp_path), "--fit-budget", "-1"]) == 2
    assert cli.main(["eval", "--data", str(tmp_path / "none"), "--out", str(tmp_path), "--checkpoint", str(tmp_path / "no.safetensors")]) == 1
    assert "lrm4d eval:" in capsys.readouterr().err
    code = ("import sys, contextlib, io\nimport lrm4d_core.cli as cli\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n    assert cli.main(['eval', '--help']) == 0\n"
            "assert 'torch' not in sys.modules and 'numpy' not in sys.modules\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_scene_background_from_scene_json(data):
    meta = load_scene(data / "object" / "object_00000")
    assert run.scene_background(meta) == (1.0, 1.0, 1.0)
    meta.raw["background"] = [0, 0, 255]
    assert run.scene_background(meta) == (0.0, 0.0, 1.0)
    meta.raw.pop("background")
    meta.raw.setdefault("generator", {})["background"] = [0.5, 0.5, 0.5]
    assert run.scene_background(meta) == (0.5, 0.5, 0.5)
    assert np.allclose(run.scene_background(meta), 0.5)


def test_pipeline_and_eval_render_the_same_image(data, model):
    """Issue 12.3: the node's core (pipeline.Reconstructor) and `lrm4d eval` composite on the same
    background, the model's own: a window rendered through both gives the same picture."""
    from lrm4d_core.pipeline import LocalBackend, PipelineConfig, Reconstructor
    from lrm4d_core.stream import Frame, Window

    import copy

    model = copy.deepcopy(model)
    with torch.no_grad():  # a visible environment map: the colour behind the Gaussians matters
        model.env_head.bias[: model.env_head.bias.numel() // 3] += 0.8
    _, ex = example(data, "alternating")
    images = (ex.images.permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy()
    end = float(ex.times.max())
    frames = tuple(Frame(f"v{int(v)}f{int(f)}", int(round((100 + float(t)) * 1e9)), images[i], ex.cameras.K[i].numpy(),
                         ex.cameras.cam_to_world[i].numpy()) for i, (v, f, t) in enumerate(zip(ex.views, ex.frames, ex.times)))
    win = Window(frames=frames, end_ns=max(f.stamp_ns for f in frames), start_ns=min(f.stamp_ns for f in frames))
    products = Reconstructor(LocalBackend(model), PipelineConfig(render_inputs_at_s=(0.0,), render_max_side=64)).process(win)
    last = int(torch.argmax(ex.times))
    view = next(r for r in products.renders if r.source == frames[last].camera)
    rec = baselines._api.reconstruct(model, ex.images, ex.cameras, ex.times, world=False)
    via_eval = baselines.render_targets(rec, ex.cameras[last:last + 1], ex.times[last:last + 1], None)[0]
    expected = (via_eval.permute(1, 2, 0) * 255 + 0.5).clamp(0, 255).to(torch.uint8).numpy()
    assert np.abs(view.image.astype(int) - expected.astype(int)).max() <= 1
    assert np.abs(expected.astype(int) - 255).max() > 40  # not a blank white image: the map shows
    assert products.reconstruction.environment is not None and end == pytest.approx(float(ex.times[last]))


def test_pipeline_forecasts_are_the_reconstructions_own(data, model):
    """The pipeline makes each forecast from the window-end cloud (`Gaussians3D.moved`, sharing its
    principal axes); it must be what `Reconstruction.forecast` gives from the 4D set, and publish
    the same 3DGS scales and rotations as a cloud factored on its own."""
    from lrm4d_core.gaussians import Gaussians3D
    from lrm4d_core.pipeline import LocalBackend, PipelineConfig, Reconstructor
    from lrm4d_core.stream import Frame, Window

    _, ex = example(data, "alternating")
    images = (ex.images.permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy()
    frames = tuple(Frame(f"v{int(v)}f{int(f)}", int(round((100 + float(t)) * 1e9)), images[i], ex.cameras.K[i].numpy(),
                         ex.cameras.cam_to_world[i].numpy()) for i, (v, f, t) in enumerate(zip(ex.views, ex.frames, ex.times)))
    win = Window(frames=frames, end_ns=max(f.stamp_ns for f in frames), start_ns=min(f.stamp_ns for f in frames))
    cfg = PipelineConfig(forecast_horizons_s=(0.5, 1.25), render_inputs_at_s=(), max_points=10**6)
    products = Reconstructor(LocalBackend(model), cfg).process(win)
    rec = products.reconstruction
    for h, cloud in products.forecasts.items():
        own = rec.forecast(h, 0.0, inference_filter=True)
        assert len(cloud) == len(own) > 0
        for name in ("means", "covars", "opacities", "colors", "velocities"):
            torch.testing.assert_close(getattr(cloud, name), getattr(own, name), rtol=1e-9, atol=1e-9)
        alone = Gaussians3D(cloud.means, cloud.covars.clone(), cloud.opacities, cloud.colors, cloud.velocities)
        for shared, fresh in zip(cloud.scales_and_rotations(), alone.scales_and_rotations()):
            torch.testing.assert_close(shared, fresh, rtol=0, atol=0)


def test_pipeline_renders_only_the_wanted_views_and_names_them_up_front(data, model):
    """A live node renders only the predicted views someone watches (`process(views=...)`), and
    offers every view's topics before the first window (`predicted_view_names`): the names must be
    those `process` gives its renders, and a view rendered alone must be the view rendered with all."""
    from lrm4d_core.pipeline import LocalBackend, PipelineConfig, Reconstructor, VirtualCamera, predicted_view_names
    from lrm4d_core.stream import Frame, Window

    _, ex = example(data, "alternating")
    images = (ex.images.permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy()
    frames = tuple(Frame(f"v{int(v)}", int(round((100 + float(t)) * 1e9)), images[i], ex.cameras.K[i].numpy(),
                         ex.cameras.cam_to_world[i].numpy()) for i, (v, t) in enumerate(zip(ex.views, ex.times)))
    win = Window(frames=frames, end_ns=max(f.stamp_ns for f in frames), start_ns=min(f.stamp_ns for f in frames))
    chase = VirtualCamera("chase", 16, 16, 20.0, 20.0, 8.0, 8.0, follow=frames[-1].camera)
    cfg = PipelineConfig(render_inputs_at_s=(0.0, 0.5), virtual_cameras=(chase,), render_max_side=16)
    cameras = sorted({f.camera for f in frames})
    reconstructor = Reconstructor(LocalBackend(model), cfg)
    everything = {r.name: r for r in reconstructor.process(win).renders}
    assert sorted(everything) == sorted(predicted_view_names(cameras, cfg))
    assert len(everything) == 2 * len(cameras) + 1 and f"{cameras[0]}@+0.50s" in everything
    wanted = {cameras[0], f"{cameras[-1]}@+0.50s", "chase"}
    asked: list[str] = []
    part = reconstructor.process(win, views=lambda name: asked.append(name) or name in wanted).renders
    assert sorted(r.name for r in part) == sorted(wanted)
    assert sorted(set(asked)) == sorted(everything)  # every view was asked about, by its name
    for r in part:
        assert np.array_equal(r.image, everything[r.name].image)
        np.testing.assert_array_equal(r.depth, everything[r.name].depth)
    assert reconstructor.process(win, views=lambda name: False).renders == []


def test_an_unreadable_first_scene_is_skipped_and_reported_not_fatal(tmp_path, model):
    """The splat references' sweep reads the first scenes of a group too: a corrupt first scene
    must be skipped there as in the main loop, and the rest evaluated."""
    import shutil

    root = tmp_path / "object"
    synth_dataset(root, scenes=2, rig="object", width=16, height=16, frames=4, seed=0, progress=False)
    first = sorted(p for p in root.iterdir() if p.is_dir())[0]
    for png in sorted(first.rglob("*.png"))[:3]:
        png.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    res = run.evaluate(model, root, protocols=["random"], fit=False, progress=False, figure=False)
    assert [e["scene"] for e in res["errors"]] == [first.name]
    cell = res["groups"]["object"]["results"]["random"]["methods"]
    assert math.isfinite(cell["model"]["psnr"]) and math.isfinite(cell["splats_heuristic"]["psnr"])
    assert cell["model"]["num_images"] > 0
    shutil.rmtree(root)


def test_where_the_model_stands_in_words():
    from lrm4d_core.eval.report import where_model_stands

    def says(model, lo, hi):
        return where_model_stands("random", {"model": {"psnr": model}, "splats_heuristic": {"psnr": lo},
                                             "splats_true_depth": {"psnr": hi}})

    assert says(18.0, 16.0, 20.0) == ("random: 18.00 dB, +2.00 dB over splats at heuristic depth, -2.00 dB from "
                                      "splats at true depth (50% of the way from heuristic to true depth).")
    assert says(21.0, 20.0, 20.5).endswith("+0.50 dB from splats at true depth (above the true-depth reference).")
    assert says(15.0, 16.0, 20.0).endswith("(below the heuristic reference).")
