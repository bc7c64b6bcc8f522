#!/usr/bin/env bash
# The accelerator check, one short script for a bare GPU machine (jax, flax, optax, orbax, timm, torch; no tfds or
# grain): the full config at paper scale in bf16, per stage: step time, images/s, MFU against the card's dense bf16
# peak, peak device memory, the share of the step in region selection + crops; then the PyTorch peer's zoom-in step
# (bf16 autocast, channels-last) on the same card, and the default config for comparison.
# Usage (repository root): bash bench/device_check.sh > $OUT/device_check.txt 2>&1
# TINY=1: tiny shapes on whatever device there is (tests/test_bench.py runs it on the CPU so it cannot rot).
set -uo pipefail
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total --format=csv 2>/dev/null || true
python -c "import jax; print('jax', jax.__version__, jax.devices())"
if [ "${TINY:-0}" = 1 ]; then
  config=tests/tiny.py stages="mnet" batches="8" steps=1 extra="--config.init_on_host=True"
else
  config=configs/full.py stages="mnet cnet joint" batches="32 16 8" steps=10 extra=""
fi
fitted=""
for stage in $stages; do
  for batch in $batches; do  # the first batch that fits is the figure
    if python bench/train_step.py --config=$config --stage=$stage --steps=$steps --config.batch_size=$batch \
        --selection $extra; then
      [ "$stage" = joint ] && fitted=$batch
      break
    fi
  done
done
if [ "${TINY:-0}" = 1 ]; then
  echo "peer: skipped (TINY=1)"
elif python -c "import torch, timm" 2>/dev/null; then
  python bench/peer_zoomin.py --batch="${fitted:-8}" --steps=10 --bf16 || echo "peer: failed"
else
  echo "peer: skipped (no torch + timm here)"
fi
[ "${TINY:-0}" = 1 ] || python bench/train_step.py --config=configs/default.py --stage=joint --steps=20
