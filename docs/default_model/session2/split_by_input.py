"""Held-out PSNR of the model and the per-frame baseline, split by whether each target's view and
frame are among the inputs (the diagnosis behind stage 2 in docs/default_model.md).

    python docs/default_model/split_by_input.py CHECKPOINT PROTOCOL [DATA_ROOT]

e.g. the stage-1 model of session 1 under frame interpolation:
    git show cdcc954:lrm4d_core/weights/lrm4d_tiny_default.safetensors > /tmp/stage1.safetensors
    python docs/default_model/split_by_input.py /tmp/stage1.safetensors interpolation data/eval_object
"""

import sys
from collections import defaultdict

import numpy as np
import torch

from lrm4d_core.eval.baselines import example_from_batch, run_model, run_per_frame
from lrm4d_core.eval.metrics import psnr
from lrm4d_core.eval.protocols import EvalDataset
from lrm4d_core.eval.run import scene_background
from lrm4d_core.model import api

checkpoint, protocol = sys.argv[1], sys.argv[2]
root = sys.argv[3] if len(sys.argv) > 3 else "data/eval_object"
model = api.load_model(checkpoint)
ds = EvalDataset(root, protocol, image_size=tuple(model.config.image_size))
groups = defaultdict(list)
for i in range(len(ds)):
    ex = example_from_batch(ds[i])
    background = torch.tensor(scene_background(ds.meta(i)))
    pred_model, _, rec = run_model(model, ex, background)
    pred_frame, _ = run_per_frame(model, ex, background, rec.scene)
    views, frames = set(ex.views.tolist()), set(ex.frames.tolist())
    for j, (v, f) in enumerate(ex.target_pairs):
        key = ("seen view" if v in views else "unseen view", "seen frame" if f in frames else "unseen frame")
        target = ex.target_images[j:j + 1]
        groups[key].append((float(psnr(pred_model[j:j + 1], target)), float(psnr(pred_frame[j:j + 1], target))))
for key, values in sorted(groups.items()):
    m, p = np.mean(values, axis=0)
    print(f"{protocol} {key[0]:>11}, {key[1]:>12}: {len(values):4d} targets  model {m:.2f} dB  per frame {p:.2f} dB")
