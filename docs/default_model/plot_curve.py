"""Training curve of the shipped default model -> training_curve.png.

Reads docs/default_model/metrics.jsonl (the run's own log; a resumed run appends, so the last
entry of a step wins) and draws, smoothed over 50 steps, the photometric loss (MSE), the depth,
opacity and velocity losses, and the PSNR of the rendered targets, with the curriculum switch
(32x32 -> 64x64 at step 2500) and the change of the velocity weight (0.5 -> 2.0 at step 3000),
then the session-8 fine-tune (finetune_vd/metrics.jsonl, its steps counted on from 5000: view-
dependent opacity in training, one input view as an extra target, balanced velocity loss).

    python docs/default_model/plot_curve.py
"""

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

here = Path(__file__).resolve().parent
rows = {}
for line in (here / "metrics.jsonl").read_text().splitlines():
    r = json.loads(line)
    rows[r["step"]] = r
for line in (here / "finetune_vd" / "metrics.jsonl").read_text().splitlines():
    r = json.loads(line)
    rows[5000 + r["step"]] = r
steps = np.array(sorted(rows))
k = 50


def smooth(values: np.ndarray) -> np.ndarray:
    return np.convolve(values, np.ones(k) / k, mode="valid")


fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.8))
for key, label in (("mse", "MSE (targets)"), ("depth", "|log z - log z_true|"), ("opacity", "opacity BCE"),
                   ("velocity", "velocity L1 (model units)")):
    values = np.array([rows[s].get(key, np.nan) for s in steps])
    a.plot(steps[k - 1:], smooth(values), lw=1.4, label=label)
psnr = np.array([rows[s]["psnr"] for s in steps])
b.plot(steps, psnr, alpha=0.15, lw=0.5, color="C0")
b.plot(steps[k - 1:], smooth(psnr), lw=1.5, color="C0", label="PSNR of rendered targets")
for axis in (a, b):
    axis.axvline(2500, color="k", lw=0.8, ls="--")
    axis.axvline(3000, color="gray", lw=0.8, ls=":")
    axis.axvline(5000, color="C3", lw=0.8, ls="-.")
a.set(xlabel="step", ylabel="loss", yscale="log", title="losses (--: 32 -> 64 px; ..: velocity 0.5 -> 2; -.: fine-tune)")
a.legend(fontsize=7, loc="upper right")
b.set(xlabel="step", ylabel="dB", title="training PSNR (rank 0's random targets)")
b.legend(loc="lower right", fontsize=8)
fig.tight_layout()
fig.savefig(here / "training_curve.png", dpi=100)
print(f"wrote {here / 'training_curve.png'} from {len(steps)} logged steps")
