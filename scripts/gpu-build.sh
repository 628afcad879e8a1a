#!/usr/bin/env bash
# Builds, on a machine with Rust, everything scripts/gpu-check.sh runs on a GPU machine
# that has no Rust toolchain: the release `calib`, the release test binaries that need a
# GPU, and a copy of the fixtures. Output: gpu-bundle/ (git-ignored; carry it along).
set -euo pipefail
cd "$(dirname "$0")/.."
bundle=${1:-gpu-bundle}
rm -rf "$bundle"
mkdir -p "$bundle/bin/tests" "$bundle/fixtures"
cargo build --release --quiet --bin calib
cp target/release/calib "$bundle/bin/"
# Test binaries of the GPU suites (tests named gpu_* in any crate).
cargo test --release --workspace --no-run --message-format=json 2>/dev/null \
  | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    exe = m.get("executable")
    if m.get("reason") == "compiler-artifact" and exe and m["target"]["name"].startswith("gpu_"):
        print(exe)' \
  | while read -r exe; do cp "$exe" "$bundle/bin/tests/"; done
for dir in ../shared/fixtures/*/; do
  cp -r "$dir" "$bundle/fixtures/"
done
# A slice of Fashion-MNIST for `calib train --backend cuda` (the GPU machine has no
# internet and no Debian package): the first 10000 training images, the whole test set.
python3 - "${FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}" "$bundle/fashion-mnist" <<'PY'
import gzip, os, struct, sys
src, dst = sys.argv[1], sys.argv[2]
os.makedirs(dst, exist_ok=True)
for name, keep in [("train-images-idx3-ubyte", 10000), ("train-labels-idx1-ubyte", 10000),
                   ("t10k-images-idx3-ubyte", None), ("t10k-labels-idx1-ubyte", None)]:
    data = gzip.open(os.path.join(src, name + ".gz")).read()
    rank = data[3]
    dims = list(struct.unpack(">%dI" % rank, data[4:4 + 4 * rank]))
    per_item = 1
    for d in dims[1:]:
        per_item *= d
    n = dims[0] if keep is None else min(keep, dims[0])
    body = data[4 + 4 * rank:4 + 4 * rank + n * per_item]
    header = data[:4] + struct.pack(">%dI" % rank, n, *dims[1:])
    with gzip.open(os.path.join(dst, name + ".gz"), "wb") as f:
        f.write(header + body)
PY
# Every launch of the SCNet-50 step as this build emits it, with ptxas's registers: the
# cost model's features, to join with the per-launch table the GPU measures (cost/data).
plan=$(mktemp -d)
target/release/calib compile scnet50 --train --batch 64 --emit-ptx --out "$plan" >/dev/null
cp "$plan/launches.json" "$bundle/scnet50-b64-launches.json"
# The tensor-core plans, for fitting the cost model to their measured launches: as
# gpu-check.sh benches them (`--layout auto`), or the launches would not be the ones
# timed (`cost::data::samples` refuses a launch timed with another grid).
for precision in tf32 bf16; do
  target/release/calib compile scnet50 --train --batch 64 --precision "$precision" --layout auto \
    --emit-ptx --out "$plan-$precision" >/dev/null
  cp "$plan-$precision/launches.json" "$bundle/scnet50-b64-$precision-launches.json"
done
target/release/calib compile resnet50 --train --batch 64 --precision bf16 --layout auto \
  --emit-ptx --out "$plan-resnet50" >/dev/null
cp "$plan-resnet50/launches.json" "$bundle/resnet50-b64-bf16-launches.json"
rm -rf "$plan" "$plan-tf32" "$plan-bf16" "$plan-resnet50"
git rev-parse HEAD > "$bundle/COMMIT" 2>/dev/null || echo unknown > "$bundle/COMMIT"
du -sh "$bundle"
