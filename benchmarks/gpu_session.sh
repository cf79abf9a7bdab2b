#!/usr/bin/env bash
# One lease of a GPU machine, end to end: CUDA tests, GPU speed and precision figures, then
# training from the shipped weights for whatever time is left. Everything lands in $OUT
# (gpu.log, run/). Run from the repository root on a machine with torch, OpenCV, typer, rich
# and scikit-image:   OUT=/tmp/gpu bash benchmarks/gpu_session.sh
# Settings: DEVICE (cuda), SESSION_SECONDS (total wall clock to fit in, 560), TRAIN_* below,
# CHECKS (all: tests and figures, the default; tests: the CUDA tests only, more time to train).
# Batch 24: stage 5 took 0.07-0.12 s per batch-12 step on an H100, far more than RAFT-small's
# arithmetic needs (launch-bound), so a larger batch buys samples at little cost per step;
# metrics.jsonl's data_seconds shows whether the generator (one worker per spare core) keeps up.
# slow_ego_prob 0.3: more steps on stage 5's generator helped Sintel but not KITTI (stages 6-8).
set -u
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
DEVICE=${DEVICE:-cuda}
SESSION_SECONDS=${SESSION_SECONDS:-560}
BENCH_SIZE=${BENCH_SIZE:-1024x436}
BIG_SIZE=${BIG_SIZE:-3840x2160}
log="$OUT/gpu.log"
mkdir -p "$OUT"
{
  echo "== machine"; nvidia-smi -L 2>/dev/null; python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())'
  # Data workers hand batches over through /dev/shm: a small one (containers) kills them.
  if [ "$(df --output=avail -k /dev/shm | tail -n 1)" -lt 4000000 ]; then mount -o remount,size=16G /dev/shm; fi
  df -h /dev/shm | tail -n 1
  echo "== tests (CUDA paths)"
  timeout 90 python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py
  if [ "${CHECKS:-all}" = all ]; then
  echo "== exact and reduced-precision paths vs the reference computation"
  timeout 90 python3 benchmarks/speed_vs_reference.py --device "$DEVICE" --size "$BENCH_SIZE" --repeats 5 --half --weights-small weights/raft-small.pt
  echo "== raft bench: batches, precision, large frames"
  timeout 60 python3 -m rafttool bench --device "$DEVICE" --size "$BENCH_SIZE" --batch 1 --batch 8 --repeats 5 --markdown -q
  timeout 60 python3 -m rafttool bench --device "$DEVICE" --size "$BENCH_SIZE" --batch 1 --batch 8 --repeats 5 --half --markdown -q
  timeout 60 python3 -m rafttool bench --device "$DEVICE" --size "$BIG_SIZE" --repeats 2 --markdown -q
  echo "== motorcycle EPE, fp32 and half precision"
  python3 benchmarks/motorcycle_dataset.py /tmp/moto >/dev/null
  timeout 40 python3 -m rafttool eval /tmp/moto/pairs.txt -m raft --device "$DEVICE" --markdown -q
  timeout 40 python3 -m rafttool eval /tmp/moto/pairs.txt -m raft --device "$DEVICE" --half --markdown -q
  fi
  left=$((SESSION_SECONDS - SECONDS - 45))  # 45 s: workers' start, the last checkpoint, the way out
  echo "== training for ${left} s"
  python3 -m rafttool train --run-dir "$OUT/run" --device "$DEVICE" --bf16 --minutes "$(python3 -c "print($left / 60)")" \
    --init-weights weights/raft-small.pt --batch-size "${TRAIN_BATCH:-24}" --crop "${TRAIN_CROP:-320x448}" \
    --iters "${TRAIN_ITERS:-12}" --lr "${TRAIN_LR:-2e-4}" --ema-decay 0.998 --seed "${TRAIN_SEED:-5151}" \
    --workers "${TRAIN_WORKERS:-$(($(nproc) - 1))}" --validate-every 500 --checkpoint-minutes 1 --synthetic low_contrast_prob=0.3 \
    --synthetic "slow_ego_prob=${TRAIN_SLOW_EGO:-0.3}" --synthetic "h_flip_prob=${TRAIN_H_FLIP:-0.5}" \
    --synthetic "v_flip_prob=${TRAIN_V_FLIP:-0.1}" -q
  echo "== training stopped (exit $?) after ${SECONDS} s in all"
  tail -n 2 "$OUT/run/metrics.jsonl"; cat "$OUT/run/validation.jsonl"
  python3 -c 'import json, statistics as st, sys
rows = [json.loads(line) for line in open(sys.argv[1])][1:]  # the first step holds the start-up
print("median s/step", st.median(r["seconds"] for r in rows), "median data wait s", st.median(r["data_seconds"] for r in rows))' "$OUT/run/metrics.jsonl"
} 2>&1 | tee "$log"
