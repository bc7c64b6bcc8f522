#!/usr/bin/env bash
# The accelerator check, as one short script (the lent GPU machines have jax/flax/optax/orbax, not tfds/grain):
# the full config's train step at paper scale in bf16 for each stage, then the default config for comparison.
# Usage (repository root): bash bench/device_check.sh > $OUT/device_check.txt 2>&1
set -uo pipefail
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total --format=csv 2>/dev/null || true
python -c "import jax; print(jax.__version__, jax.devices())"
for stage in mnet cnet joint; do
  for batch in 32 16 8; do  # the first batch that fits is the figure
    if python bench/train_step.py --config=configs/full.py --stage=$stage --steps=10 --config.batch_size=$batch; then
      break
    fi
  done
done
python bench/train_step.py --config=configs/default.py --stage=joint --steps=20
