#!/usr/bin/env bash
# The GPU check, for an x86-64 machine with an NVIDIA GPU and no internet (driver, nvcc,
# ptxas and PyTorch present, no Rust). Runs what scripts/gpu-build.sh prepared: the GPU
# tests, `calib verify --backend cuda` on every fixture, and the SCNet-50 training-step
# benchmark (batch 64, 224x224) beside PyTorch eager and torch.compile in the same run.
# Writes JSON into OUT (default bench/results/). Finishes in under 8 minutes.
#
#   bash scripts/gpu-check.sh [OUT] [BUNDLE]
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-bench/results}
bundle=${2:-gpu-bundle}
mkdir -p "$out"
started=$(date +%s)

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "gpu-check: no NVIDIA GPU here (nvidia-smi missing or lists no device); nothing to check." >&2
  printf '{"gpu": null, "reason": "no NVIDIA GPU (nvidia-smi missing or lists no device)"}\n' > "$out/gpu-check.json"
  exit 3
fi
calib="$bundle/bin/calib"
if [ ! -x "$calib" ]; then
  echo "gpu-check: $calib not found; run scripts/gpu-build.sh on a machine with Rust and carry $bundle" >&2
  exit 2
fi

status=0
step() { # step NAME SECONDS CMD...: runs CMD with a time limit, logs to OUT/NAME.log
  local name=$1 limit=$2; shift 2
  echo "== $name"
  if timeout "$limit" "$@" > "$out/$name.log" 2>&1; then
    echo "   ok ($(( $(date +%s) - started ))s elapsed)"
  else
    echo "   FAILED (exit $?), see $out/$name.log"; tail -n 20 "$out/$name.log"; status=1
  fi
}

nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv > "$out/device.csv" 2>&1
step devices 30 "$calib" devices --json
export CALIB_FIXTURES="$(cd "$bundle/fixtures" && pwd)"
for t in "$bundle"/bin/tests/*; do
  [ -x "$t" ] && step "test-$(basename "$t" | sed 's/-[0-9a-f]*$//')" 120 "$t"
done
for dir in "$bundle"/fixtures/*/; do
  [ -f "$dir/meta.json" ] || continue
  step "verify-cuda-$(basename "$dir")" 60 "$calib" verify --backend cuda --json "$dir"
done
step bench-calib-f32 120 "$calib" bench --model scnet50 --batch 64 --backend cuda --steps 20 --json
if python3 -c 'import torch' 2>/dev/null; then
  step check-pytorch-definition 60 python3 bench/scnet_torch.py --check "$bundle"/fixtures/scconv "$bundle"/fixtures/scbottleneck_s1 "$bundle"/fixtures/scbottleneck_s2_down "$bundle"/fixtures/tiny_scnet
  step bench-pytorch 240 python3 bench/torch_gpu_step.py --out "$out/pytorch.json" --batch 64 --steps 20
else
  echo "== PyTorch not importable: no baseline in this run"; status=1
fi

python3 - "$out" "$bundle" "$status" <<'PY'
import json, os, sys, glob
out, bundle, status = sys.argv[1], sys.argv[2], int(sys.argv[3])
summary = {"commit": open(os.path.join(bundle, "COMMIT")).read().strip() if os.path.exists(os.path.join(bundle, "COMMIT")) else "unknown",
           "device": open(os.path.join(out, "device.csv")).read().strip().splitlines()[-1],
           "passed": status == 0, "logs": sorted(os.path.basename(p) for p in glob.glob(os.path.join(out, "*.log")))}
try:
    summary["calib"] = json.loads(open(os.path.join(out, "bench-calib-f32.log")).read())
except Exception as e:
    summary["calib"] = {"error": str(e)}
if os.path.exists(os.path.join(out, "pytorch.json")):
    summary["pytorch"] = json.load(open(os.path.join(out, "pytorch.json")))
json.dump(summary, open(os.path.join(out, "gpu-check.json"), "w"), indent=1)
print(json.dumps(summary, indent=1)[:2000])
PY
echo "gpu-check: finished in $(( $(date +%s) - started ))s, status $status"
exit $status
