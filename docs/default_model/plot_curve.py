"""Training curve of the shipped default model: docs/default_model/metrics.jsonl -> training_curve.png.

    python docs/default_model/plot_curve.py
"""

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

here = Path(__file__).resolve().parent
rows = [json.loads(line) for line in (here / "metrics.jsonl").read_text().splitlines()]
step = np.array([r["step"] for r in rows])
psnr = np.array([r["psnr"] for r in rows])
loss = np.array([r["loss"] for r in rows])
k = 25
smooth = lambda x: np.convolve(x, np.ones(k) / k, mode="valid")  # noqa: E731
fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.5))
a.plot(step, loss, alpha=0.25, lw=0.5)
a.plot(step[k - 1:], smooth(loss), lw=1.5)
a.set(xlabel="step", ylabel="training loss (MSE)", yscale="log", title="loss")
b.plot(step, psnr, alpha=0.25, lw=0.5)
b.plot(step[k - 1:], smooth(psnr), lw=1.5)
b.set(xlabel="step", ylabel="PSNR of rendered targets (dB)", title="training PSNR")
fig.tight_layout()
fig.savefig(here / "training_curve.png", dpi=100)
print(f"wrote {here / 'training_curve.png'} from {len(rows)} logged steps")
