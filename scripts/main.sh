#!/usr/bin/env bash
# The main job: install what is needed, build calib, check it against the authors' PyTorch
# numbers on every fixture, and summarize SCNet-50.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release --quiet
calib=target/release/calib
fixtures=../shared/fixtures
for dir in "$fixtures"/*/; do
  "$calib" verify "$dir" | tail -n 1 | sed "s|^ *|$(basename "$dir"): |"
done
"$calib" info scnet50 | head -n 5
