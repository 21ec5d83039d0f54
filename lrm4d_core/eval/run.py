"""`lrm4d eval`: the SPEC §4 protocols with the baselines, in one run, on the same views.

    lrm4d eval --checkpoint model.safetensors --data data/eval_object --data data/eval_driving \\
        --out eval_out [--protocols alternating random] [--max-scenes 4] \\
        [--lpips-vgg vgg16.safetensors --lpips-lin lpips_vgg_lin.safetensors] \\
        [--fit-budget match|SECONDS] [--no-fit]

Per data root, scenes are grouped by rig variant (`eval.protocols`): object-rig scenes get the four
protocols (alternating, interpolation, two_rotating, random) and the SPEC §4 targets (every
canonical view + the held-out random-orbit view at every frame); scenes without canonical views
(driving) get only ``random`` (surround variant). Per scene and protocol the model and the three
baselines of `eval.baselines` (no time, per frame, test-time 4DGS fit at equal wall-clock time)
render every target; PSNR and SSIM are computed per target image against the ground truth at
the evaluation resolution (default: the model's input size; inputs and targets are resized as the
dataset does), LPIPS too when its weight files are given.

Background: predictions are composited on the scene's background colour: ``background`` from
scene.json (top level or the generator record) when present, else white, which is what the
synthetic object scenes are rendered on and what training composites on. Driving scenes have
sky/ground everywhere, so their background matters only where the model leaves holes.

Outputs in ``--out``: ``eval.json`` (config, provenance, per-group/protocol/method means, per-scene
and per-image numbers; non-finite numbers as the strings "inf"/"-inf"/"nan", see
`eval.report`), ``eval.md`` (tables: rows = methods, columns = protocols, cells "PSNR / SSIM"
(/ LPIPS)), ``eval.png`` (one scene and protocol: inputs, ground truth at held-out view-times,
one row of predictions per method).

Timing: the model's reconstruct time is measured per example (`model.api.reconstruct`, device
synchronized, after one untimed warm-up call per run) and is the fit's budget with
``--fit-budget match``. Importing this module does not import torch (the CLI builds its parser
from `add_arguments`).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import logging
import math
import subprocess
import sys
import time as _time
from pathlib import Path
from typing import Any, Sequence

from lrm4d_core.argtypes import parse_color

__all__ = ["evaluate", "add_arguments", "main", "FIGURE_PROTOCOL_ORDER"]

log = logging.getLogger(__name__)

PROTOCOL_NAMES = ("alternating", "interpolation", "two_rotating", "random")  # = data.dataset.PROTOCOLS (tested)
FIGURE_PROTOCOL_ORDER = ("interpolation", "random", "alternating", "two_rotating")
_FIGURE_INPUTS = 8
_FIGURE_TARGETS = 6


# ------------------------------------------------------------------------------------- helpers
def _git(args: list[str]) -> str | None:
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def scene_background(meta) -> tuple[float, float, float] | None:
    """The scene's background colour in [0, 1]: scene.json ``background`` (top level or in
    ``generator``; 0-255 values are rescaled) if recorded; white for object-rig scenes that do not
    record one (what `lrm4d synth` renders them on); None for other rigs (sky and ground everywhere)."""
    raw = meta.raw or {}
    for value in (raw.get("background"), (raw.get("generator") or {}).get("background")):
        if isinstance(value, (list, tuple)) and len(value) == 3 and all(isinstance(v, (int, float)) for v in value):
            rgb = [float(v) for v in value]
            if max(rgb) > 1.0:
                rgb = [v / 255.0 for v in rgb]
            return tuple(min(max(v, 0.0), 1.0) for v in rgb)  # type: ignore[return-value]
    return (1.0, 1.0, 1.0) if meta.rig == "object" else None


def scene_info(meta):
    """The `references.SceneInfo` of a scene: box, ground plane, background colour."""
    from .references import SceneInfo

    return SceneInfo(meta.scene_box, meta.ground_plane, scene_background(meta))


def _mean(values: Sequence[float]) -> float | None:
    return float(sum(values) / len(values)) if len(values) else None


def _finite_mean(values: Sequence[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return _mean(vals)


def _spread(n: int, k: int) -> list[int]:
    """k indices spread evenly over range(n) (all of them if n <= k)."""
    if n <= k:
        return list(range(n))
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)}) if k > 1 else [0]


def _group_label(root: Path, used: set[str]) -> str:
    label = root.name or str(root)
    base, i = label, 2
    while label in used:
        label = f"{base}_{i}"
        i += 1
    return label


# ------------------------------------------------------------------------------------- evaluate
def evaluate(
    checkpoint_or_model: Any = None,
    data_roots: str | Path | Sequence[str | Path] = (),
    protocols: Sequence[str] | None = None,
    image_size: tuple[int, int] | None = None,
    max_scenes: int | None = None,
    lpips_weights: tuple[str | Path, str | Path] | None = None,
    fit_budget: str | float = "match",
    fit: bool = True,
    fit_gaussians: int = 4096,
    seed: int = 0,
    out_dir: str | Path | None = None,
    device: str | None = None,
    background: tuple[float, float, float] | None = None,
    progress: bool = True,
    figure: bool = True,
) -> dict:
    """Evaluate a model and the baselines under the SPEC §4 protocols (module docstring).

    Args:
        checkpoint_or_model: a checkpoint path, an `LRM4D`, or None for the embedded default model.
        data_roots: one or more directories of lrm4d-scene directories (or scene directories).
        protocols: subset of the four protocols (default all); each group runs those that apply.
        image_size: (H, W) of the evaluation (inputs and targets); default the model's input size.
        max_scenes: at most this many scenes per data root (the first ones, sorted by name).
        lpips_weights: (vgg16 safetensors, LPIPS linear-heads safetensors) or None (no LPIPS).
        fit_budget: "match" (per example, the model's measured reconstruct time) or seconds.
        fit: run the test-time fit baseline.
        fit_gaussians: number of Gaussians of the fit.
        seed: seed of the random-view protocol draws and of the fit.
        out_dir: where eval.json / eval.md / eval.png go (None: nothing is written).
        device: "auto"/None (CUDA if available), "cpu", "cuda", ... (with a model instance, its device).
        background: override the per-scene background colour ([0, 1] RGB).
        progress: show a tqdm bar.
        figure: write eval.png.
    Returns:
        the eval.json content (with Python floats; inf/NaN stay floats here).
    """
    import torch
    from tqdm import tqdm

    from lrm4d_core import __version__
    from lrm4d_core.data.dataset import PROTOCOLS
    from lrm4d_core.data.format import SceneFormatError, find_scenes, load_scene
    from lrm4d_core.model import api as _api
    from lrm4d_core.model.lrm4d import LRM4D

    from .baselines import METHOD_LABELS, METHODS, evaluate_example, example_from_batch, render_targets, warm_up
    from .protocols import EvalDataset, protocol_variant, scene_protocols
    from .references import REFERENCE_LABELS, REFERENCES, choose_sweep, run_references
    from .report import json_safe, make_figure, markdown_report
    from .metrics import psnr
    from .scoring import SURFACE_FRACTION_OF_EXTENT, depth_scores, image_scores, surface_scores

    started = _time.perf_counter()
    # ------------------------------------------------------------------ model and provenance
    provenance: dict[str, Any] = {"lrm4d_version": __version__, "torch_version": torch.__version__,
                                  "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                                  "git_commit": _git(["rev-parse", "HEAD"]), "checkpoint": None}
    status = _git(["status", "--porcelain", "--untracked-files=no"])
    provenance["git_dirty"] = bool(status) if status is not None else None
    if isinstance(checkpoint_or_model, LRM4D):
        model = checkpoint_or_model.eval()
    else:
        path = checkpoint_or_model if checkpoint_or_model is not None else _api.default_checkpoint()
        if path is None:
            raise ValueError("no checkpoint given and this build has no embedded default model; pass --checkpoint FILE")
        from lrm4d_core.io.checkpoint import read_checkpoint_header

        dev = None if device in (None, "auto") else device
        model = _api.load_model(path, device=dev)
        header = read_checkpoint_header(path)
        provenance.update(checkpoint=str(header.path), checkpoint_sha256=_sha256(header.path),
                          checkpoint_provenance=header.provenance)
    provenance["model"] = {"preset": model.config.preset, "parameters": model.num_parameters(),
                           "image_size": list(model.config.image_size), "config": model.config.to_dict()}
    provenance["device"] = str(model.device)
    if model.device.type == "cuda":
        provenance["device_name"] = torch.cuda.get_device_name(model.device)
    size = tuple(int(s) for s in (image_size or model.config.image_size))
    if min(size) < 11:
        raise ValueError(f"evaluation images of {size[0]}x{size[1]} are smaller than the 11x11 SSIM window")

    wanted = tuple(PROTOCOLS) if protocols is None else tuple(protocols)
    bad = [p for p in wanted if p not in PROTOCOLS]
    if bad:
        raise ValueError(f"unknown protocols {bad}; expected some of {PROTOCOLS}")
    if fit_budget != "match":
        fit_budget = float(fit_budget)
        if not fit_budget > 0:
            raise ValueError(f"fit_budget must be 'match' or a positive number of seconds, got {fit_budget}")
    methods = tuple(m for m in METHODS if fit or m != "fit")
    lpips = None
    if lpips_weights is not None:
        from .perceptual import LPIPS

        lpips = LPIPS.from_files(*lpips_weights).to(model.device)

    # ------------------------------------------------------------------ scenes and groups
    roots = [data_roots] if isinstance(data_roots, (str, Path)) else list(data_roots)
    if not roots:
        raise ValueError("no data roots given")
    errors: list[dict] = []
    groups: dict[str, dict] = {}
    used: set[str] = set()
    for root in roots:
        root = Path(root)
        dirs = find_scenes(root)
        if not dirs:
            raise FileNotFoundError(f"no scenes found under {root} (expected */scene.json)")
        if max_scenes is not None:
            dirs = dirs[: int(max_scenes)]
        label = _group_label(root, used)
        used.add(label)
        by_variant: dict[str, list] = {}
        for d in dirs:
            try:
                meta = load_scene(d, check_files=False)
            except SceneFormatError as err:
                log.error("skipping scene %s: %s", d, err)
                errors.append({"scene": str(d), "error": str(err)})
                continue
            by_variant.setdefault(protocol_variant(meta), []).append((d, meta))
        for variant, items in by_variant.items():
            name = label if len(by_variant) == 1 else f"{label}:{variant}"
            applicable = [scene_protocols(m) for _, m in items]
            group_protocols = [p for p in wanted if any(p in a for a in applicable)]
            skipped = [p for p in wanted if p not in group_protocols]
            if skipped:
                log.info("%s: protocol(s) %s do not apply to %s scenes", name, ", ".join(skipped), variant)
            groups[name] = {"root": str(root), "variant": variant, "rig": items[0][1].rig,
                            "dirs": [d for d, _ in items], "metas": [m for _, m in items],
                            "applicable": applicable, "protocols": group_protocols, "skipped_protocols": skipped}

    units = [(g, p, i) for g, grp in groups.items() for p in grp["protocols"]
             for i in range(len(grp["dirs"])) if p in grp["applicable"][i]]
    fig_unit = None
    for g, grp in groups.items():
        for i, a in enumerate(grp["applicable"]):
            p = next((p for p in FIGURE_PROTOCOL_ORDER if p in a and p in grp["protocols"]), None)
            if p is not None:
                fig_unit = (g, p, i)
                break
        if fig_unit:
            break

    # ------------------------------------------------------------------ run
    per_example: list[dict] = []
    fig_data = None
    warmed = False
    datasets: dict[tuple[str, str], Any] = {}
    sweeps: dict[tuple[str, str], tuple[dict, dict]] = {}
    override = torch.tensor(tuple(background), dtype=torch.float32, device=model.device) if background is not None else None

    def dataset(g: str, p: str):
        if (g, p) not in datasets:
            grp = groups[g]
            recs = [r for m in grp["metas"] for r in m.images]
            datasets[(g, p)] = EvalDataset([str(d) for d in grp["dirs"]], p, image_size=size, seed=seed,
                                           with_depth=all(r.depth for r in recs), with_masks=all(r.mask for r in recs))
        return datasets[(g, p)]

    def sweep(g: str, p: str) -> dict:
        """The splat references' settings for (group, protocol): the best of the sweep on its first examples."""
        if (g, p) not in sweeps:
            grp = groups[g]
            exs, infos = [], []
            for i in (i for i in range(len(grp["dirs"])) if p in grp["applicable"][i]):
                try:  # an unreadable scene is skipped (and reported by the main loop), not fatal here
                    exs.append(example_from_batch(dataset(g, p)[i]))
                except (SceneFormatError, ValueError, OSError):
                    continue
                infos.append(scene_info(grp["metas"][i]))
                if len(exs) == 2:
                    break
            sweeps[(g, p)] = choose_sweep(exs, infos, render_targets)
        return sweeps[(g, p)][0]

    bar = tqdm(units, desc="eval", unit="example", dynamic_ncols=True, disable=not progress)
    for g, p, i in bar:
        grp = groups[g]
        meta = grp["metas"][i]
        try:
            batch = dataset(g, p)[i]
        except (SceneFormatError, ValueError, OSError) as err:
            log.error("skipping %s / %s: %s", meta.scene_id, p, err)
            errors.append({"scene": meta.scene_id, "protocol": p, "error": str(err)})
            continue
        ex = example_from_batch(batch)
        if not warmed:  # the first calls pay one-off costs: keep them out of the timings and budgets
            warm_up(model, ex, override, fit, fit_gaussians)
            warmed = True
        preds, info, rec, model_depth = evaluate_example(model, ex, override, methods, fit_budget, fit_gaussians, seed)
        info_scene = scene_info(meta)
        ref_preds, ref_depths, ref_clouds = run_references(ex, info_scene, sweep(g, p), render_targets)
        preds.update(ref_preds)
        inputs = set(ex.input_pairs)
        held_out = [pair not in inputs for pair in ex.target_pairs]
        bg_used = "model" if override is None else list(background)
        row: dict[str, Any] = {"group": g, "protocol": p, "scene_id": meta.scene_id, "scene_dir": str(grp["dirs"][i]),
                               "background": bg_used, "inputs": [list(x) for x in ex.input_pairs],
                               "targets": [list(x) for x in ex.target_pairs], "held_out": held_out,
                               "info": info, "methods": {}, "depth": {}, "surface": {}}
        for m, pred in preds.items():
            scores = image_scores(pred, ex)
            if lpips is not None:
                with torch.inference_mode():
                    vals = [lpips(pred[j:j + 32].to(model.device), ex.target_images[j:j + 32].to(model.device)).cpu()
                            for j in range(0, len(pred), 32)]
                scores["lpips"] = torch.cat(vals).double().tolist()
            row["methods"][m] = scores
        for m, depth in (({"model": model_depth} if model_depth is not None else {}) | ref_depths).items():
            row["depth"][m] = depth_scores(depth, ex, held_out)
        slicers = {name: (lambda t, _g=g4: _g.slice(t, inference_filter=True)) for name, g4 in ref_clouds.items()}
        if "model" in methods:
            slicers["model"] = lambda t: rec.slice(t, inference_filter=True)
            # the inputs themselves (seen view, seen time): a reconstruction must at least reproduce them
            seen = render_targets(rec, ex.cameras, ex.times, override)
            row["input_psnr"] = psnr(seen.double(), ex.images.double()).tolist()
        row["surface"] = surface_scores(slicers, ex)
        per_example.append(row)
        if progress and "model" in row["methods"]:
            bar.set_postfix(scene=meta.scene_id, protocol=p, psnr=f"{_mean(row['methods']['model']['psnr']):.2f}")
        if figure and (g, p, i) == fig_unit:
            fig_data = (ex, preds, row)
    bar.close()
    methods = tuple(methods) + REFERENCES
    labels = {**METHOD_LABELS, **REFERENCE_LABELS}

    # ------------------------------------------------------------------ aggregate
    def aggregate(rows: list[dict], m: str) -> dict:
        out: dict[str, Any] = {}
        for metric in ("psnr", "ssim", "lpips", "psnr_fg", "ssim_fg"):
            vals, held = [], []
            for r in rows:
                if m in r["methods"] and metric in r["methods"][m]:
                    v = r["methods"][m][metric]
                    vals += [x for x in v if x is not None]
                    held += [x for x, h in zip(v, r["held_out"]) if h and x is not None]
            out[metric] = _mean(vals) if vals else None
            out[metric + "_held_out"] = _mean(held) if held else None
        depth = [d for r in rows if (d := r.get("depth", {}).get(m)) and d["pixels"] > 0]
        pixels = sum(d["pixels"] for d in depth)
        for key in ("abs_rel", "delta_1_25"):
            out[key] = sum(d[key] * d["pixels"] for d in depth) / pixels if pixels else None
        out["surface_fraction"] = _finite_mean([r.get("surface", {}).get(m) for r in rows])
        if m == "model":
            seen = [x for r in rows for x in r.get("input_psnr", [])]
            out["input_psnr"] = _mean(seen) if seen else None
        out["num_images"] = sum(len(r["targets"]) for r in rows if m in r["methods"])
        out["num_held_out"] = sum(sum(r["held_out"]) for r in rows if m in r["methods"])
        return out

    group_out: dict[str, dict] = {}
    for g, grp in groups.items():
        res = {}
        for p in grp["protocols"]:
            rows = [r for r in per_example if r["group"] == g and r["protocol"] == p]
            mres = {m: aggregate(rows, m) for m in methods if any(m in r["methods"] for r in rows)}
            info = [r["info"] for r in rows]

            def mean_of(method, key, _info=info):
                return _finite_mean([x.get(method, {}).get(key) for x in _info])

            timing = {
                "num_inputs": _mean([len(r["inputs"]) for r in rows]),
                "num_targets": _mean([len(r["targets"]) for r in rows]),
                "model_seconds": mean_of("model", "seconds"),
                "no_time_seconds": mean_of("no_time", "seconds"),
                "per_frame_seconds": mean_of("per_frame", "seconds"),
                "per_frame_reconstructions": mean_of("per_frame", "reconstructions"),
                "fit_budget_s": mean_of("fit", "budget_s"),
                "fit_seconds": mean_of("fit", "seconds"),
                "fit_steps": mean_of("fit", "steps"),
            }
            beats = {}
            if "model" in mres and mres["model"]["psnr"] is not None:
                for b in ("no_time", "per_frame"):
                    if b in mres and mres[b]["psnr"] is not None:
                        beats[b] = bool(mres["model"]["psnr"] > mres[b]["psnr"])
            sweep_choice, sweep_table = sweeps.get((g, p), ({}, {}))
            res[p] = {"num_scenes": len(rows), "methods": mres, "timing": timing, "model_beats": beats,
                      "reference_settings": {k: v.label() for k, v in sweep_choice.items()}, "reference_sweep": sweep_table}
        group_out[g] = {"root": grp["root"], "rig": grp["rig"], "variant": grp["variant"], "num_scenes": len(grp["dirs"]),
                        "scenes": [m.scene_id for m in grp["metas"]], "protocols": grp["protocols"],
                        "skipped_protocols": grp["skipped_protocols"], "results": res}

    results: dict[str, Any] = {
        "format": "lrm4d-eval", "format_version": 1,
        "config": {"data": [str(r) for r in roots], "protocols": list(wanted), "image_size": list(size),
                   "max_scenes": max_scenes, "lpips": lpips is not None,
                   "lpips_weights": [str(x) for x in lpips_weights] if lpips_weights else None,
                   "fit": fit, "fit_budget": fit_budget, "fit_gaussians": fit_gaussians, "seed": seed,
                   "background": list(background) if background is not None else
                   "each method's own: the model's environment map or training background; references: the scene's",
                   "surface_threshold": f"{SURFACE_FRACTION_OF_EXTENT:g} of the scene extent"},
        "provenance": provenance,
        "methods": list(methods), "method_labels": {m: labels[m] for m in methods},
        "groups": group_out, "examples": per_example, "errors": errors,
        "json_non_finite": "non-finite numbers are written as the strings 'inf', '-inf', 'nan'",
    }

    # ------------------------------------------------------------------ outputs
    seconds = _time.perf_counter() - started
    results["seconds"] = seconds
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        if fig_data is not None:
            ex, preds, row = fig_data
            results["figure"] = _write_figure(out / "eval.png", ex, preds, row, methods, labels, make_figure)
        (out / "eval.md").write_text(markdown_report(results, labels), encoding="utf-8")
        (out / "eval.json").write_text(json.dumps(json_safe(results), indent=1, allow_nan=False) + "\n", encoding="utf-8")
    results["summary"] = _summary(results, len(per_example), seconds, out_dir)
    return results


def _write_figure(path: Path, ex, preds: dict, row: dict, methods, labels, make_figure) -> dict:
    held = [j for j, h in enumerate(row["held_out"]) if h] or list(range(len(row["targets"])))
    # prefer held-out targets at frames without any input (unseen times), then the rest, spread in time
    input_frames = {f for _, f in row["inputs"]}
    unseen_time = [j for j in held if row["targets"][j][1] not in input_frames]
    pool = unseen_time if len(unseen_time) >= _FIGURE_TARGETS else held
    chosen = [pool[k] for k in _spread(len(pool), _FIGURE_TARGETS)]
    ins = _spread(len(ex.images), _FIGURE_INPUTS)
    rows = []
    for m in methods:
        if m in preds:
            caps = [f"{row['methods'][m]['psnr'][j]:.1f} dB" for j in chosen]
            rows.append((labels.get(m, m), preds[m][chosen].numpy(), caps))
    title = f"{row['scene_id']} / protocol {row['protocol']}: inputs, ground truth at held-out views/times, predictions (PSNR)"
    make_figure(
        path, title,
        ex.images[ins].numpy(), [f"v{ex.views[k]} f{ex.frames[k]}" for k in ins],
        ex.target_images[chosen].numpy(), [f"v{row['targets'][j][0]} f{row['targets'][j][1]}" for j in chosen],
        rows,
    )
    return {"file": path.name, "scene_id": row["scene_id"], "protocol": row["protocol"],
            "targets": [row["targets"][j] for j in chosen],
            "caption": f"scene {row['scene_id']}, protocol {row['protocol']}: {len(ins)} of {len(ex.images)} inputs, "
                       f"{len(chosen)} held-out targets, one row per method"}


def _summary(results: dict, n_examples: int, seconds: float, out_dir) -> str:
    parts = []
    for g, grp in results["groups"].items():
        for p in grp["protocols"]:
            ms = grp["results"][p]["methods"]

            def f(m):
                v = ms.get(m, {}).get("psnr")
                return "-" if v is None else ("inf" if math.isinf(v) else f"{v:.2f}")

            parts.append(f"{g}/{p} " + "/".join(f(m) for m in results["methods"]))
    where = f"; wrote {Path(out_dir) / 'eval.md'}" if out_dir is not None else ""
    errs = f", {len(results['errors'])} skipped (see errors)" if results["errors"] else ""
    return (f"eval: {n_examples} examples{errs} in {seconds:.0f} s; PSNR {'/'.join(results['methods'])}: "
            + ("; ".join(parts) or "nothing evaluated") + where)


# ------------------------------------------------------------------------------------- CLI
def _fit_budget(text: str) -> str | float:
    if text == "match":
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'match' or seconds, got {text!r}") from None
    if not value > 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"the fit budget must be a positive number of seconds, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value




def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", default=None, metavar="FILE",
                        help="model checkpoint (.safetensors); default: the embedded default model")
    parser.add_argument("--data", action="append", required=True, metavar="DIR",
                        help="directory of lrm4d-scene scenes (repeat for several held-out splits)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output directory for eval.json, eval.md, eval.png")
    parser.add_argument("--protocols", nargs="+", choices=PROTOCOL_NAMES, default=None, metavar="NAME",
                        help=f"protocols to run (default: all that apply): {', '.join(PROTOCOL_NAMES)}")
    parser.add_argument("--max-scenes", type=_positive_int, default=None, metavar="N", help="at most N scenes per --data")
    parser.add_argument("--image-size", type=_positive_int, default=None, metavar="PX",
                        help="evaluation resolution (square); default: the model's input size")
    parser.add_argument("--lpips-vgg", default=None, metavar="FILE", help="VGG-16 weights (safetensors) for LPIPS")
    parser.add_argument("--lpips-lin", default=None, metavar="FILE", help="LPIPS linear-head weights (safetensors)")
    parser.add_argument("--fit-budget", type=_fit_budget, default="match", metavar="match|SECONDS",
                        help="wall-clock budget of the test-time fit per example (default: match the model's time)")
    parser.add_argument("--fit-gaussians", type=_positive_int, default=4096, metavar="N",
                        help="Gaussians in the test-time fit (default: %(default)s)")
    parser.add_argument("--no-fit", action="store_true", help="skip the test-time fit baseline")
    parser.add_argument("--background", type=parse_color, default=None, metavar="COLOR",
                        help="override the background: white|black|gray|R,G,B (default: per scene, white if unrecorded)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random-view draws and of the fit (default: 0)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: %(default)s)")
    parser.add_argument("--no-figure", action="store_true", help="do not write eval.png")


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if (args.lpips_vgg is None) != (args.lpips_lin is None):
        print("lrm4d eval: give both --lpips-vgg and --lpips-lin, or neither", file=sys.stderr)
        return 2
    size = (args.image_size, args.image_size) if args.image_size else None
    try:
        results = evaluate(
            args.checkpoint, args.data, protocols=args.protocols, image_size=size, max_scenes=args.max_scenes,
            lpips_weights=(args.lpips_vgg, args.lpips_lin) if args.lpips_vgg else None,
            fit_budget=args.fit_budget, fit=not args.no_fit, fit_gaussians=args.fit_gaussians, seed=args.seed,
            out_dir=args.out, device=args.device, background=args.background, figure=not args.no_figure,
        )
    except Exception as err:  # noqa: BLE001 - bad paths/weights/checkpoints: one clear line, no traceback
        from lrm4d_core.io.checkpoint import CheckpointError

        if not isinstance(err, (ValueError, FileNotFoundError, CheckpointError)):
            raise
        print(f"lrm4d eval: {err}", file=sys.stderr)
        return 1
    print(results["summary"])
    return 0 if results["examples"] else 1
