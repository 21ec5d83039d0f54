"""Training curve of the previous default model (session 2, SPEC §1 parametrization) -> training_curve.png.

Stage 1 (train_tiny.yaml in this folder): metrics.jsonl; stage 2, the fine-tune
(train_tiny_finetune.yaml): metrics_finetune.jsonl, drawn after it.

    python docs/default_model/session2/plot_curve.py
"""

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

here = Path(__file__).resolve().parent
SHIPPED_STEP = 7000 + 1250
k = 25
smooth = lambda x: np.convolve(x, np.ones(k) / k, mode="valid")  # noqa: E731
fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.5))
offset, total = 0, 0
for name, label in (("metrics.jsonl", "stage 1: uniform views"), ("metrics_finetune.jsonl", "stage 2: + SPEC §4 layouts")):
    path = here / name
    if not path.exists():
        continue
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    step = np.array([r["step"] for r in rows]) + offset
    for axis, key in ((a, "loss"), (b, "psnr")):
        values = np.array([r[key] for r in rows])
        axis.plot(step, values, alpha=0.2, lw=0.5)
        axis.plot(step[k - 1:], smooth(values), lw=1.5, label=label)
    offset = int(step[-1])
    total += len(rows)
for axis in (a, b):  # the shipped weights: stage 2's step 1250, chosen on the validation split
    axis.axvline(SHIPPED_STEP, color="k", lw=0.8, ls="--", label="shipped" if axis is b else None)
a.set(xlabel="step", ylabel="training loss (MSE)", yscale="log", title="loss")
b.set(xlabel="step", ylabel="PSNR of rendered targets (dB)", title="training PSNR")
b.legend(loc="lower right", fontsize=8)
fig.tight_layout()
fig.savefig(here / "training_curve.png", dpi=100)
print(f"wrote {here / 'training_curve.png'} from {total} logged steps")
