"""Evaluation outputs: strict JSON (non-finite numbers as strings), the markdown tables, the figure.

JSON: `json_safe` turns every float that JSON cannot hold into a string: +inf -> "inf" (e.g. the
PSNR of a perfect prediction), -inf -> "-inf", NaN -> "nan"; the file is then written with
``allow_nan=False``, so any JSON parser reads it. `from_json_number` maps them back.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

__all__ = ["json_safe", "from_json_number", "format_number", "markdown_report", "where_model_stands", "make_figure"]


def json_safe(x: Any) -> Any:
    """Recursively convert to JSON-safe values (numpy/torch scalars to Python; inf/NaN to strings)."""
    if isinstance(x, dict):
        return {str(k): json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    if hasattr(x, "tolist") and not isinstance(x, (str, bytes)):  # numpy arrays/scalars, tensors
        return json_safe(x.tolist())
    if isinstance(x, bool) or x is None or isinstance(x, (int, str)):
        return x
    if isinstance(x, float):
        if math.isnan(x):
            return "nan"
        if math.isinf(x):
            return "inf" if x > 0 else "-inf"
        return x
    if isinstance(x, Path):
        return str(x)
    return str(x)


def from_json_number(x: Any) -> float | None:
    """Inverse of `json_safe` for one number ("inf", "-inf", "nan" or a number; None stays None)."""
    if x is None:
        return None
    return float(x)


def format_number(x: float | None, digits: int) -> str:
    if x is None:
        return "-"
    if isinstance(x, str):
        x = float(x)
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if math.isnan(x):
        return "nan"
    return f"{x:.{digits}f}"


def _cell(m: dict, suffix: str = "") -> str:
    parts = [format_number(m.get("psnr" + suffix), 2), format_number(m.get("ssim" + suffix), 3)]
    if m.get("lpips" + suffix) is not None:
        parts.append(format_number(m.get("lpips" + suffix), 3))
    return " / ".join(parts)


def where_model_stands(protocol: str, methods: dict) -> str | None:
    """One sentence: the model's PSNR between the heuristic and the true-depth splat references."""
    model, lo, hi = (methods.get(k, {}).get("psnr") for k in ("model", "splats_heuristic", "splats_true_depth"))
    if model is None or lo is None:
        return None
    text = f"{protocol}: {model:.2f} dB, {model - lo:+.2f} dB over splats at heuristic depth"
    if hi is not None:
        text += f", {model - hi:+.2f} dB from splats at true depth"
        if model > hi:
            text += " (above the true-depth reference)"
        elif model < lo:
            text += " (below the heuristic reference)"
        elif hi > lo:
            text += f" ({100 * (model - lo) / (hi - lo):.0f}% of the way from heuristic to true depth)"
    return text + "."


def markdown_report(results: dict, labels: dict[str, str]) -> str:
    """The eval.md text: per data group, a method x protocol table of PSNR / SSIM (/ LPIPS)."""
    cfg = results["config"]
    prov = results["provenance"]
    lines = ["# lrm4d evaluation", ""]
    model = prov.get("model", {})
    lines.append(
        f"- checkpoint: `{prov.get('checkpoint') or 'in-memory model'}`"
        + (f" (sha256 {prov['checkpoint_sha256'][:12]})" if prov.get("checkpoint_sha256") else "")
    )
    lines.append(
        f"- model: preset {model.get('preset')}, {model.get('parameters', 0) / 1e6:.2f} M parameters, "
        f"input {model.get('image_size')}, device {prov.get('device')}"
    )
    lines.append(f"- git commit: {prov.get('git_commit') or 'unknown'}{' (dirty tree)' if prov.get('git_dirty') else ''}")
    fit = "off" if not cfg["fit"] else (
        "the model's measured reconstruct time per example" if cfg["fit_budget"] == "match" else f"{cfg['fit_budget']} s per example"
    )
    lines.append(f"- test-time fit budget: {fit}; {cfg['fit_gaussians']} Gaussians")
    lines.append(f"- evaluation resolution: {cfg['image_size']}; seed {cfg['seed']}")
    lpips_note = "PSNR / SSIM / LPIPS" if cfg["lpips"] else "PSNR / SSIM (LPIPS: no weights given)"
    lines.append(f"- cells: {lpips_note}, mean over every target image of every scene (PSNR: mean of per-image dB)")
    lines.append("")
    for gname, group in results["groups"].items():
        protocols = group["protocols"]
        variant = group["variant"]
        lines.append(f"## {gname}: {group['num_scenes']} {group['rig']} scene(s)")
        lines.append("")
        if variant == "object":
            lines.append("Targets: the canonical views and the held-out random-orbit view at every frame (SPEC §4).")
        else:
            lines.append(
                "No canonical views on this rig: only `random` applies (one random camera per frame as input; "
                "targets: every other camera at every frame)."
            )
        if not protocols:
            lines += ["", "No protocol applies to these scenes.", ""]
            continue
        methods = [m for m in results["methods"] if any(m in group["results"][p]["methods"] for p in protocols)]
        for title, suffix in (("All targets", ""), ("Held-out targets only (target view-time not among the inputs)", "_held_out")):
            lines += ["", f"{title}:", ""]
            lines.append("| method | " + " | ".join(protocols) + " |")
            lines.append("|---|" + "---|" * len(protocols))
            for m in methods:
                cells = [_cell(group["results"][p]["methods"].get(m, {}), suffix) for p in protocols]
                lines.append(f"| {labels.get(m, m)} | " + " | ".join(cells) + " |")
        if any(group["results"][p]["methods"].get(m, {}).get("psnr_fg") is not None for p in protocols for m in methods):
            lines += ["", "Foreground only (the scene's masks: objects; everything but the sky on open rigs), PSNR / SSIM:", ""]
            lines.append("| method | " + " | ".join(protocols) + " |")
            lines.append("|---|" + "---|" * len(protocols))
            for m in methods:
                cells = [_cell(group["results"][p]["methods"].get(m, {}), "_fg") for p in protocols]
                lines.append(f"| {labels.get(m, m)} | " + " | ".join(cells) + " |")
        geo = [m for m in methods if any(group["results"][p]["methods"].get(m, {}).get(k) is not None
                                         for p in protocols for k in ("delta_1_25", "surface_fraction"))]
        if geo:
            lines += ["", "Geometry: rendered depth at held-out targets (AbsRel / share of pixels within 1.25x of the true "
                      "depth, where it is finite) and the share of the Gaussians' opacity on a true surface (within "
                      f"{results['config'].get('surface_threshold', '2% of the scene extent')}):", ""]
            lines.append("| method | " + " | ".join(f"{p}: AbsRel / δ<1.25 / on surface" for p in protocols) + " |")
            lines.append("|---|" + "---|" * len(protocols))
            for m in geo:
                cells = []
                for p in protocols:
                    r = group["results"][p]["methods"].get(m, {})
                    cells.append(" / ".join(format_number(r.get(k), 3) for k in ("abs_rel", "delta_1_25", "surface_fraction")))
                lines.append(f"| {labels.get(m, m)} | " + " | ".join(cells) + " |")
        seen = {p: group["results"][p]["methods"].get("model", {}).get("input_psnr") for p in protocols}
        if any(v is not None for v in seen.values()):
            lines += ["", "The model's renders of its own inputs (seen view, seen time), PSNR: "
                      + ", ".join(f"{p} {format_number(v, 2)} dB" for p, v in seen.items()) + "."]
        standing = [where_model_stands(p, group["results"][p]["methods"]) for p in protocols]
        standing = [x for x in standing if x]
        if standing:
            lines += ["", "Where the model stands (PSNR, all targets): " + " ".join(standing)]
        settings = {p: group["results"][p].get("reference_settings") for p in protocols}
        if any(settings.values()):
            lines += ["", "Splat references use the best of their sweep on the first examples of each protocol: "
                      + "; ".join(f"{p}: " + ", ".join(f"{k} {v}" for k, v in sv.items()) for p, sv in settings.items() if sv) + "."]
        lines += ["", "Inputs, targets and time per example (means over scenes; seconds of wall-clock):", ""]
        lines.append("| protocol | scenes | inputs | targets | model reconstruct s | no-time s | per-frame s (reconstructions) | fit budget s | fit steps |")
        lines.append("|---|---|---|---|---|---|---|---|---|")
        for p in protocols:
            t = group["results"][p]["timing"]
            lines.append(
                f"| {p} | {group['results'][p]['num_scenes']} | {format_number(t.get('num_inputs'), 1)} | "
                f"{format_number(t.get('num_targets'), 1)} | {format_number(t.get('model_seconds'), 3)} | "
                f"{format_number(t.get('no_time_seconds'), 3)} | {format_number(t.get('per_frame_seconds'), 3)} "
                f"({format_number(t.get('per_frame_reconstructions'), 1)}) | {format_number(t.get('fit_budget_s'), 3)} | "
                f"{format_number(t.get('fit_steps'), 1)} |"
            )
        beats = []
        for p in protocols:
            b = group["results"][p].get("model_beats", {})
            if b:
                beats.append(f"{p}: " + ", ".join(f"{'beats' if v else 'does NOT beat'} {k}" for k, v in b.items()))
        if beats:
            lines += ["", "Model vs baselines in PSNR (all targets): " + "; ".join(beats) + "."]
        lines.append("")
    if results.get("figure"):
        lines += [f"Figure: `{results['figure']['file']}` ({results['figure']['caption']}).", ""]
    return "\n".join(lines) + "\n"


def _to_uint8(images: np.ndarray) -> np.ndarray:
    """[N, 3, H, W] float in [0, 1] -> [N, H, W, 3] uint8."""
    return (np.clip(np.asarray(images, dtype=np.float32), 0, 1) * 255 + 0.5).astype(np.uint8).transpose(0, 2, 3, 1)


def make_figure(
    path: str | Path,
    title: str,
    inputs: np.ndarray,
    input_labels: Sequence[str],
    targets: np.ndarray,
    target_labels: Sequence[str],
    rows: Sequence[tuple[str, np.ndarray, Sequence[str]]],
    min_tile: int = 96,
) -> None:
    """A PNG: a title, a row of inputs, a row of ground-truth targets, one row of predictions per method.

    ``inputs`` / ``targets`` / row predictions: [N, 3, H, W] floats in [0, 1]; every tile gets its
    caption underneath (e.g. "v6 f3" or "23.4 dB"); row names in a left column.
    """
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    h, w = targets.shape[-2:]
    zoom = max(1, math.ceil(min_tile / max(h, w)))
    th, tw = h * zoom, w * zoom
    label_w, caption_h, title_h, pad = 150, 14, 20, 4
    all_rows = [("inputs", inputs, input_labels), ("ground truth", targets, target_labels), *rows]
    ncols = max(len(r[1]) for r in all_rows)
    width = label_w + ncols * (tw + pad) + pad
    height = title_h + len(all_rows) * (th + caption_h + pad) + pad
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    draw.text((pad, 4), title, fill=(0, 0, 0), font=font)
    y = title_h
    for name, images, captions in all_rows:
        draw.text((pad, y + th // 2 - 6), name, fill=(0, 0, 0), font=font)
        for i, tile in enumerate(_to_uint8(images)):
            x = label_w + i * (tw + pad)
            im = Image.fromarray(tile).resize((tw, th), Image.NEAREST)
            canvas.paste(im, (x, y))
            draw.rectangle([x - 1, y - 1, x + tw, y + th], outline=(160, 160, 160))
            if i < len(captions):
                draw.text((x + 2, y + th + 1), str(captions[i]), fill=(0, 0, 0), font=font)
        y += th + caption_h + pad
    canvas.save(str(path))
