#!/usr/bin/env bash
# The main job: install what is needed, build calib, check it against the authors' PyTorch
# numbers on every fixture, then train the default SCNet on Fashion-MNIST (3 epochs on the
# reference backend; about 5 minutes on 2 cores). Extra arguments go to `calib train`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release --quiet
calib=target/release/calib
for dir in ../shared/fixtures/*/; do
  printf '%s: ' "$(basename "$dir")"
  "$calib" verify "$dir" | tail -n 1 | sed 's/^ *//'
done
"$calib" train --out runs/fashion "$@"
echo "metrics: runs/fashion/metrics.jsonl, weights: runs/fashion/model.safetensors"
