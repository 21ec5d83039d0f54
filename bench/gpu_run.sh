#!/usr/bin/env bash
# Issue 13's "where a GPU is at hand" run, prepared as one command of about 8 minutes:
#   1. gsplat-vs-torch parity (tests/test_render.py -m cuda; gsplat compiles its kernels on first use),
#   2. bench/model.py's GPU figures,
#   3. the `small` preset trained on the shipped recipe (docs/train_small_gpu.yaml) for TRAIN_MINUTES
#      (after the stages before it, so gsplat's kernels are built by then),
#   4. `lrm4d eval` of it (with the shipped file's inference-time config, docs/default_model/as_shipped.py)
#      and of the shipped tiny file, side by side on the same held-out scenes.
# Everything it writes goes to $OUT (at most 8 files come back from a device machine, 16 MiB each):
#   parity.txt, model_gpu.json, run.log (the stages, the training log and its metrics.jsonl), eval_small.md, eval_tiny.md,
#   results.tar.gz (the eval JSONs and figures), small_fp16.safetensors.part-aa/-ab (the checkpoint,
#   split under 16 MiB; `cat small_fp16.safetensors.part-* > small_fp16.safetensors`).
#
# Usage, from the repository root, on a machine with torch and CUDA:
#   OUT=/tmp/out bash bench/gpu_run.sh
# Where gsplat is not installed, put its wheel in .whl/ (ignored by git) and the script installs it:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux2014_x86_64 -d .whl gsplat==1.5.3
# (a py3-none-any wheel of 6.5 MB; numpy, safetensors, pillow, tqdm, pyyaml, scikit-image, tensorboard, pytest
# are what the stages import besides torch). On this project's lent H200 (`run` tool, 15 minutes a session):
#   run(command="bash bench/gpu_run.sh", carry=[".whl"], timeout_s=600)
# Knobs (environment): DEVICE (cuda), TRAIN_MINUTES (2), TRAIN_STEPS (from the config), EVAL_SCENES (2 per
# rig), EVAL_MINUTES (2: each evaluation is stopped after this), SCENES_OBJECT/DRIVING/WORKSPACE (96/24/36
# training scenes), WORKERS (nproc - 2), WORK (/tmp/lrm4d_gpu).
# Time, planned, not measured on a GPU: gsplat's kernel build (a few minutes; bench/model.py and the
# training render with gsplat on CUDA and wait for it), 2 min of training, at most 2 min of evaluation:
# about 8 minutes. Lower TRAIN_MINUTES / EVAL_SCENES where the build is slower.
# A dry run on a CPU checks the plumbing: DEVICE=cpu TRAIN_MINUTES=0.5 TRAIN_STEPS=4 EVAL_SCENES=1 \
#   EVAL_MINUTES=30 SCENES_OBJECT=2 SCENES_DRIVING=1 SCENES_WORKSPACE=1 OUT=/tmp/out bash bench/gpu_run.sh
# Each stage logs to $OUT and a failed stage does not stop the next ones; the exit status is the number
# of failed stages.
set -uo pipefail
OUT=${OUT:?set OUT to the folder for the results}
DEVICE=${DEVICE:-cuda}
TRAIN_MINUTES=${TRAIN_MINUTES:-2}
EVAL_SCENES=${EVAL_SCENES:-2}
EVAL_MINUTES=${EVAL_MINUTES:-2}
WORK=${WORK:-/tmp/lrm4d_gpu}
WORKERS=${WORKERS:-$(( $(nproc) > 3 ? $(nproc) - 2 : 1 ))}
export TQDM_DISABLE=1 PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$OUT" "$WORK"
failed=0
stage() { echo "== $(date +%T) $*" | tee -a "$OUT/run.log"; }
fail() { echo "FAILED: $*" | tee -a "$OUT/run.log"; failed=$((failed + 1)); }
lrm4d() { python3 -m lrm4d_core.cli "$@"; }

if [ -d .whl ] && ls .whl/*.whl > /dev/null 2>&1; then
  stage "installing the carried wheels"
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$WORK/site" .whl/*.whl \
    && export PYTHONPATH="$PYTHONPATH:$WORK/site" || fail "wheels"
fi
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" | tee -a "$OUT/run.log"

# 1. parity, in the background: gsplat's first call compiles its CUDA kernels (minutes, on the CPUs),
# while the data is synthesized; the training below waits on the same build lock if it needs them
stage "parity (background)"
( python3 -m pytest -q -m cuda tests/test_render.py > "$OUT/parity.txt" 2>&1 || echo "pytest exit $?" >> "$OUT/parity.txt" ) &
parity_pid=$!

# data: the training sets of docs/train_tiny.yaml, fewer scenes; the held-out split of docs/default_model.md
stage "synthesizing data with $WORKERS workers"
synth() { lrm4d synth --out "$WORK/data/$1" --scenes "$2" --rig "$3" --size 64 --frames 24 --supersample 2 \
          --seed "$4" ${5:+--start $5} --workers "$WORKERS" --skip-existing > "$WORK/synth_$1.log" 2>&1 || fail "synth $1"; }
synth object "${SCENES_OBJECT:-96}" object 1
synth driving "${SCENES_DRIVING:-24}" driving 2
synth workspace "${SCENES_WORKSPACE:-36}" workspace 3
synth eval_object "$EVAL_SCENES" object 1001 100000
synth eval_driving "$EVAL_SCENES" driving 1002 100000
synth eval_workspace "$EVAL_SCENES" workspace 1003 100000

# 2. model figures
stage "bench/model.py"
python3 bench/model.py --skip-cpu --gpu-presets small base > "$OUT/model_gpu.json" 2> "$WORK/model_gpu.err" \
  || fail "bench/model.py (stderr in $WORK/model_gpu.err)"

# 3. training, time-bounded (a run stopped early saves its last step)
stage "training the small preset for $TRAIN_MINUTES min"
sed -e "s#/tmp/lrm4d_gpu#$WORK#g" -e "s#^device: .*#device: $DEVICE#" docs/train_small_gpu.yaml > "$WORK/train.yaml"
lrm4d train --config "$WORK/train.yaml" --no-resume --max-minutes "$TRAIN_MINUTES" ${TRAIN_STEPS:+--steps $TRAIN_STEPS} \
  >> "$OUT/run.log" 2>&1 || fail "train"
ckpt=$(ls "$WORK"/run/checkpoints/step_*[0-9].safetensors 2>/dev/null | sort | tail -1)
[ -f "$WORK/run/metrics.jsonl" ] && { echo "== metrics.jsonl"; cat "$WORK/run/metrics.jsonl"; } >> "$OUT/run.log"
if [ -n "$ckpt" ]; then
  python3 docs/default_model/as_shipped.py "$ckpt" "$WORK/small_fp16.safetensors" >> "$OUT/run.log" 2>&1 || fail "as_shipped"
  split -b 15M "$WORK/small_fp16.safetensors" "$OUT/small_fp16.safetensors.part-" || fail "split"
else
  fail "no checkpoint written"
fi

# 4. both models on the same held-out scenes, side by side (two processes)
stage "evaluating"
data="--data $WORK/data/eval_object --data $WORK/data/eval_driving --data $WORK/data/eval_workspace"
evaluate() { timeout "${EVAL_MINUTES}m" python3 -m lrm4d_core.cli eval --checkpoint "$2" $data --no-fit --device "$DEVICE" --out "$WORK/eval_$1" > "$WORK/eval_$1.log" 2>&1 \
             && cp "$WORK/eval_$1/eval.md" "$OUT/eval_$1.md"; }
small_pid=
if [ -f "$WORK/small_fp16.safetensors" ]; then evaluate small "$WORK/small_fp16.safetensors" & small_pid=$!; fi
evaluate tiny lrm4d_core/weights/lrm4d_tiny_default.safetensors || fail "eval tiny (log in results.tar.gz)"
if [ -n "$small_pid" ]; then wait "$small_pid" || fail "eval small (log in results.tar.gz)"; fi
wait "$parity_pid"
stage "packing"
tar -czf "$OUT/results.tar.gz" -C "$WORK" $(cd "$WORK" && ls -d eval_small eval_tiny eval_*.log synth_*.log model_gpu.err 2>/dev/null) \
  || fail "tar"
echo "gpu_run: $failed failed stage(s); results in $OUT"
exit "$failed"
