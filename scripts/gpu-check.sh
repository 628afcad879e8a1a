#!/usr/bin/env bash
# The GPU check, for an x86-64 machine with an NVIDIA GPU and no internet (driver, nvcc,
# ptxas and PyTorch present, no Rust). Runs what scripts/gpu-build.sh prepared: the GPU
# tests (fixtures, CUDA graphs, data-parallel replicas, NCCL), `calib verify --backend
# cuda` on every fixture, the SCNet-50 training-step benchmark (batch 64, 224x224; plain
# and as a CUDA graph) beside PyTorch eager and torch.compile in the same run, and short
# `calib train --backend cuda` runs (one replica, and two replicas) on a bundled slice of
# Fashion-MNIST. Writes JSON into OUT (default bench/results/). Every step has a time
# limit inside one overall deadline, so it finishes in under 8 minutes.
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
deadline=$(( started + ${GPU_CHECK_SECONDS:-450} ))  # the whole check stays under 8 minutes
step() { # step NAME SECONDS CMD...: runs CMD within min(SECONDS, time left), logs OUT/NAME.log
  local name=$1 limit=$2; shift 2
  local left=$(( deadline - $(date +%s) ))
  echo "== $name"
  if [ "$left" -lt 10 ]; then
    echo "   SKIPPED: out of time"; echo "skipped: the check's time ran out" > "$out/$name.log"; status=1; return
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  if timeout "$limit" "$@" > "$out/$name.log" 2>&1; then
    echo "   ok ($(( $(date +%s) - started ))s elapsed)"
  else
    echo "   FAILED (exit $?), see $out/$name.log"; tail -n 20 "$out/$name.log"; status=1
  fi
}

nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv > "$out/device.csv" 2>&1
step devices 30 "$calib" devices --json

# NCCL: cudarc loads `libnccl.so`; the nvidia-nccl wheels (PyTorch's dependency) and
# distribution packages ship `libnccl.so.2`, so link whichever is found.
nccl_lib=$(python3 -c 'import nvidia.nccl, os; print(os.path.join(list(nvidia.nccl.__path__)[0], "lib", "libnccl.so.2"))' 2>/dev/null || true)
[ -f "$nccl_lib" ] || nccl_lib=$(ldconfig -p 2>/dev/null | awk '/libnccl\.so\.2 /{print $NF; exit}')
if [ -n "$nccl_lib" ] && [ -f "$nccl_lib" ]; then
  mkdir -p "$bundle/nccl" && ln -sf "$nccl_lib" "$bundle/nccl/libnccl.so"
  export LD_LIBRARY_PATH="$(cd "$bundle/nccl" && pwd)${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  export CALIB_REQUIRE_NCCL=1
  echo "== nccl: $nccl_lib"; echo "$nccl_lib" > "$out/nccl.txt"
else
  echo "== nccl: not found (the NCCL tests are skipped)"; echo "not found" > "$out/nccl.txt"
fi

export CALIB_FIXTURES="$(cd "$bundle/fixtures" && pwd)"
for t in "$bundle"/bin/tests/*; do
  [ -x "$t" ] && step "test-$(basename "$t" | sed 's/-[0-9a-f]*$//')" 200 "$t" --test-threads 1
done
fixtures=()
for dir in "$bundle"/fixtures/*/; do [ -f "$dir/meta.json" ] && fixtures+=("$dir"); done
step verify-cuda 90 "$calib" verify --backend cuda --json "${fixtures[@]}"
step bench-calib-f32 120 "$calib" bench --model scnet50 --batch 64 --backend cuda --steps 10 --json
if python3 -c 'import torch' 2>/dev/null; then
  step check-pytorch-definition 45 python3 bench/scnet_torch.py --check "${fixtures[@]}"
  step bench-pytorch 180 python3 bench/torch_gpu_step.py --out "$out/pytorch.json" --batch 64 --steps 10
else
  echo "== PyTorch not importable: no baseline in this run"; status=1
fi
step bench-calib-f32-graph 90 "$calib" bench --model scnet50 --batch 64 --backend cuda --cuda-graph --steps 10 --json
step train-cuda 60 "$calib" train --backend cuda --data-dir "$bundle/fashion-mnist" --epochs 1 --batch 128 --test-limit 2000 --out "$out/train-cuda"
step train-cuda-replicas 60 "$calib" train --backend cuda --replicas 2 --data-dir "$bundle/fashion-mnist" --max-steps 20 --batch 128 --test-limit 1000 --out "$out/train-cuda-replicas"

python3 - "$out" "$bundle" "$status" <<'PY'
import json, os, sys, glob
out, bundle, status = sys.argv[1], sys.argv[2], int(sys.argv[3])
summary = {"commit": open(os.path.join(bundle, "COMMIT")).read().strip() if os.path.exists(os.path.join(bundle, "COMMIT")) else "unknown",
           "device": open(os.path.join(out, "device.csv")).read().strip().splitlines()[-1],
           "passed": status == 0, "logs": sorted(os.path.basename(p) for p in glob.glob(os.path.join(out, "*.log")))}
summary["nccl"] = open(os.path.join(out, "nccl.txt")).read().strip() if os.path.exists(os.path.join(out, "nccl.txt")) else "unknown"
for key, log in [("calib", "bench-calib-f32.log"), ("calib_cuda_graph", "bench-calib-f32-graph.log")]:
    try:
        summary[key] = json.loads(open(os.path.join(out, log)).read())
    except Exception as e:
        summary[key] = {"error": str(e)}
for key, run in [("train_cuda", "train-cuda"), ("train_cuda_replicas", "train-cuda-replicas")]:
    path = os.path.join(out, run, "metrics.jsonl")
    if os.path.exists(path):
        lines = [json.loads(l) for l in open(path) if l.strip()]
        summary[key] = lines[-2:]
if os.path.exists(os.path.join(out, "pytorch.json")):
    summary["pytorch"] = json.load(open(os.path.join(out, "pytorch.json")))
json.dump(summary, open(os.path.join(out, "gpu-check.json"), "w"), indent=1)
print(json.dumps(summary, indent=1)[:2000])
PY
echo "gpu-check: finished in $(( $(date +%s) - started ))s, status $status"
exit $status
