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
git rev-parse HEAD > "$bundle/COMMIT" 2>/dev/null || echo unknown > "$bundle/COMMIT"
du -sh "$bundle"
