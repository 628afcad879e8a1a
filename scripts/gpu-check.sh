#!/usr/bin/env bash
# The GPU check, for an x86-64 machine with an NVIDIA GPU and no internet (driver, nvcc,
# ptxas and PyTorch present, no Rust). Runs what scripts/gpu-build.sh prepared, most
# wanted first (a session's device time is short, and later steps are skipped when the
# deadline comes):
#   1. speed (issue 11): the SCNet-50 step at bf16 and TF32 and ResNet-50's at bf16, as
#      `--layout auto` plans them, CUDA graphs, every launch timed (the tables the cost
#      model's tensor-core coefficients are fitted to), beside PyTorch eager in the same
#      run; then `calib verify --backend cuda` on every fixture at each precision;
#   2. the f32 step's first step on a GPU that never ran it (an empty cubin cache, the
#      driver's JIT cache off), then a warm process: step time and a per-launch table;
#   3. the GPU tests (fixtures, sessions, CUDA graphs, replicas, NCCL, per-launch timing);
#   4. `calib train --backend cuda` on a bundled Fashion-MNIST slice: images/s, plain,
#      as a CUDA graph, two replicas, and a group of processes started as torchrun
#      starts them (one per GPU: one process on a one-GPU machine); the next batch's
#      copy overlapping the step (the copy's time hidden and exposed, the same losses
#      with staging off), and `calib eval --backend cuda` against the reference;
#   5. the f32 step as a CUDA graph, the TF32 step at 255 registers, `calib tune`, and
#      last torch.compile (its first compile of SCNet-50 takes minutes).
# Every step has a time limit inside one overall deadline (GPU_CHECK_SECONDS, 450 s).
# Into OUT (default bench/results/) go: gpu-check.json (the summary), the per-launch
# tables scnet50-b64-{,tf32-,bf16-}kernels.csv, the features of those launches as the
# bundle's build emitted them (scnet50-b64-*launches.json: with the tables, data sets to
# refit the cost model to, see cost/data/), and gpu-check-logs.tar.gz (every log and
# metrics file).
#
#   bash scripts/gpu-check.sh [OUT] [BUNDLE]
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-bench/results}
bundle=${2:-gpu-bundle}
mkdir -p "$out"
out=$(cd "$out" && pwd)
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
calib=$(cd "$(dirname "$calib")" && pwd)/calib

# Logs, run directories and caches live here; only the summary, the table and an
# archive of the logs go to OUT.
work=$(mktemp -d "${TMPDIR:-/tmp}/calib-gpu-check.XXXXXX")
logs="$work/logs"
mkdir -p "$logs"
# One cubin cache for the whole check, empty until the cold start fills it.
export CALIB_CACHE_DIR="$work/cache"

status=0
deadline=$(( started + ${GPU_CHECK_SECONDS:-450} ))  # the whole check stays under 8 minutes
# step NAME SECONDS CMD...: runs CMD within min(SECONDS, time left); stdout to
# logs/NAME.out, stderr to logs/NAME.log; one line per step in logs/steps.tsv.
step() {
  local name=$1 limit=$2; shift 2
  local left=$(( deadline - $(date +%s) )) t0 code
  echo "== $name"
  if [ "$left" -lt 10 ]; then
    echo "   SKIPPED: out of time"; printf '%s\tskipped\t0\n' "$name" >> "$logs/steps.tsv"; status=1; return
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  t0=$(date +%s)
  timeout "$limit" "$@" > "$logs/$name.out" 2> "$logs/$name.log"
  code=$?
  if [ "$code" = 0 ]; then
    echo "   ok ($(( $(date +%s) - started ))s elapsed)"
    printf '%s\tok\t%s\n' "$name" "$(( $(date +%s) - t0 ))" >> "$logs/steps.tsv"
  else
    echo "   FAILED (exit $code), see $name.log in the archive"
    tail -n 20 "$logs/$name.log"
    printf '%s\tfailed (exit %s)\t%s\n' "$name" "$code" "$(( $(date +%s) - t0 ))" >> "$logs/steps.tsv"
    status=1
  fi
}

nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv > "$logs/device.csv" 2>&1
step devices 20 "$calib" devices --json
# ptxas assembles the kernels for this GPU (calib looks on PATH and in
# /usr/local/cuda/bin); a toolkit elsewhere, or the ptxas Triton ships with PyTorch, is
# pointed at explicitly. Without one calib falls back to the driver's JIT, and says so.
if [ -z "${CALIB_PTXAS:-}" ] && ! command -v ptxas >/dev/null 2>&1 && [ ! -x /usr/local/cuda/bin/ptxas ]; then
  triton_ptxas=$(python3 -c 'import os, triton; print(os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas"))' 2>/dev/null || true)
  for p in /usr/local/cuda-*/bin/ptxas $triton_ptxas; do
    if [ -x "$p" ]; then export CALIB_PTXAS=$p; break; fi
  done
fi
ptxas_bin=${CALIB_PTXAS:-$(command -v ptxas || ls /usr/local/cuda/bin/ptxas 2>/dev/null)}
if [ -n "$ptxas_bin" ]; then
  echo "$ptxas_bin: $("$ptxas_bin" --version 2>&1 | tail -n 1)" > "$logs/ptxas.txt"
else
  echo "not found (kernels are JIT-compiled by the driver)" > "$logs/ptxas.txt"
fi
echo "== ptxas: $(cat "$logs/ptxas.txt")"

# NCCL: cudarc loads `libnccl.so`; the nvidia-nccl wheels (PyTorch's dependency) and
# distribution packages ship `libnccl.so.2`, so link whichever is found.
nccl_lib=$(python3 -c 'import nvidia.nccl, os; print(os.path.join(list(nvidia.nccl.__path__)[0], "lib", "libnccl.so.2"))' 2>/dev/null || true)
[ -f "$nccl_lib" ] || nccl_lib=$(ldconfig -p 2>/dev/null | awk '/libnccl\.so\.2 /{print $NF; exit}')
if [ -n "$nccl_lib" ] && [ -f "$nccl_lib" ]; then
  mkdir -p "$work/nccl" && ln -sf "$nccl_lib" "$work/nccl/libnccl.so"
  export LD_LIBRARY_PATH="$work/nccl${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  export CALIB_REQUIRE_NCCL=1
  echo "== nccl: $nccl_lib"; echo "$nccl_lib" > "$logs/nccl.txt"
else
  echo "== nccl: not found (the NCCL tests are skipped)"; echo "not found" > "$logs/nccl.txt"
fi

# 1. Speed (issue 11). The tensor-core steps in the layout the cost model picks
# (`auto`: NHWC), every launch timed so that the cost model's tensor-core coefficients
# can be fitted to them, with their own cubin cache (the f32 cold start below stays
# cold).
speed_cache="$work/cache-tensor-cores"
for precision in bf16 tf32; do
  step "bench-calib-$precision" 90 env CALIB_CACHE_DIR="$speed_cache" "$calib" bench \
    --model scnet50 --batch 64 --backend cuda --precision "$precision" --layout auto \
    --cuda-graph --steps 10 --json --per-kernel "$out/scnet50-b64-$precision-kernels.csv"
done
# ResNet-50 at bf16 (the issue's 4,000 images/s criterion).
step bench-calib-resnet50-bf16 60 env CALIB_CACHE_DIR="$speed_cache" "$calib" bench \
  --model resnet50 --batch 64 --backend cuda --precision bf16 --layout auto --cuda-graph \
  --steps 10 --json --per-kernel "$logs/resnet50-b64-bf16-kernels.csv"
# PyTorch in the same run: eager now (default, bf16 autocast NCHW and channels_last),
# torch.compile last.
torch_ok=0
if python3 -c 'import torch' 2>/dev/null; then
  torch_ok=1
  step bench-pytorch 60 python3 bench/torch_gpu_step.py --no-compile --out "$work/pytorch.json" \
    --batch 64 --steps 10
  step bench-pytorch-resnet50 45 python3 bench/torch_gpu_step.py --model resnet50 --no-compile \
    --out "$work/pytorch-resnet50.json" --batch 64 --steps 10
else
  echo "== PyTorch not importable: no baseline in this run"; status=1
fi
fixtures=()
for dir in "$bundle"/fixtures/*/; do [ -f "$dir/meta.json" ] && fixtures+=("$dir"); done
for precision in tf32 bf16; do
  step "verify-cuda-$precision" 45 env CALIB_CACHE_DIR="$speed_cache" "$calib" verify \
    --backend cuda --precision "$precision" --json "${fixtures[@]}"
done

# 2. Cold start: nothing cached, neither cubins nor the driver's JIT output. Then a
# second process, warm (cubins cached), also times every launch.
step cold-start 120 env CUDA_CACHE_DISABLE=1 \
  "$calib" bench --model scnet50 --batch 64 --backend cuda --steps 1 --json
step warm-start 150 "$calib" bench --model scnet50 --batch 64 --backend cuda --steps 10 --json \
  --per-kernel "$out/scnet50-b64-kernels.csv"

# 3. The GPU tests.
export CALIB_FIXTURES="$(cd "$bundle/fixtures" && pwd)"
for t in "$bundle"/bin/tests/*; do
  [ -x "$t" ] && step "test-$(basename "$t" | sed 's/-[0-9a-f]*$//')" 120 "$t" --test-threads 1
done

# 4. Training on the GPU.
train=(train --backend cuda --data-dir "$bundle/fashion-mnist" --batch 128 --log-every 10)
step train-cuda 60 "$calib" "${train[@]}" --epochs 1 --test-limit 2000 --out "$work/train-cuda"
step train-cuda-graph 60 "$calib" "${train[@]}" --cuda-graph --epochs 1 --test-limit 2000 --out "$work/train-cuda-graph"
step train-cuda-replicas 40 "$calib" "${train[@]}" --replicas 2 --max-steps 20 --test-limit 1000 --out "$work/train-cuda-replicas"
# A group of processes as torchrun starts them (the rendezvous, ncclGetUniqueId,
# ncclCommInitRank; every run above also uploads its batches through page-locked
# memory on a copy stream). NCCL refuses two ranks on one GPU: one process on a
# machine with one GPU, two where there are more.
gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU')
launch_world=1; [ "$gpus" -ge 2 ] && launch_world=2
echo "$launch_world" > "$logs/launch-world.txt"
step train-cuda-launch 60 env MASTER_PORT=$(( 29500 + RANDOM % 2000 )) bash scripts/launch-local.sh "$launch_world" \
  "$calib" "${train[@]}" --max-steps 20 --test-limit 1000 --rendezvous-timeout 60 --out "$work/train-cuda-launch"

# The next batch's copy overlapping the step (Session::step_and_stage): the train-cuda
# run above staged each batch while the step before it ran and logged the copy's time,
# hidden and exposed (CUDA events, batch_copy_* in its metrics); the same run with
# staging off (the old path) must give the same losses. Then `calib eval` on the GPU
# against the reference interpreter, on the model that run trained.
step train-cuda-unstaged 60 env CALIB_STAGE_BATCHES=0 "$calib" "${train[@]}" --epochs 1 --test-limit 2000 --out "$work/train-cuda-unstaged"
step eval-cuda 30 "$calib" eval "$work/train-cuda" --backend cuda --limit 1000 --json
step eval-reference 45 "$calib" eval "$work/train-cuda" --backend reference --limit 1000 --json

# 5. The rest.
step verify-cuda 45 "$calib" verify --backend cuda --json "${fixtures[@]}"
step bench-calib-f32-graph 60 "$calib" bench --model scnet50 --batch 64 --backend cuda --cuda-graph --steps 10 --json
# Spills: most tensor-core GEMMs spill at the schedules' 128-register cap (two blocks of
# 256 threads per SM). The same tf32 plan at 255 registers (no spills, one block per SM),
# every launch timed, says which side of that trade each kernel is on.
step bench-calib-tf32-255-registers 60 env CALIB_GEMM_MAX_REGISTERS=255 "$calib" bench --model scnet50 \
  --batch 64 --backend cuda --precision tf32 --cuda-graph --steps 10 --json \
  --per-kernel "$logs/scnet50-b64-tf32-255-registers-kernels.csv"
# Autotuning: each GEMM shape's cost-model top candidates measured in whole steps; the
# cache comes back in the logs archive for cost/tuning/.
step tune-tf32 90 "$calib" tune scnet50 --batch 64 --precision tf32 --layout auto --candidates 3 --runs 2 \
  --out "$logs/tuning-scnet50-b64-tf32.json"
if [ "$torch_ok" = 1 ]; then
  step bench-pytorch-compile 200 python3 bench/torch_gpu_step.py --compile-only \
    --out "$work/pytorch-compile.json" --batch 64 --steps 10
fi

for run in train-cuda train-cuda-graph train-cuda-replicas train-cuda-launch train-cuda-unstaged; do
  [ -f "$work/$run/metrics.jsonl" ] && cp "$work/$run/metrics.jsonl" "$logs/$run.metrics.jsonl"
done
for f in pytorch pytorch-resnet50 pytorch-compile; do
  [ -f "$work/$f.json" ] && cp "$work/$f.json" "$logs/$f.json"
done
python3 - "$out" "$logs" "$bundle" "$status" <<'PY'
import json, os, statistics, sys
out, logs, bundle, status = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])

def read(path, parse=lambda f: f.read().strip()):
    try:
        with open(path) as f:
            return parse(f)
    except Exception as e:
        return {"error": f"{os.path.basename(path)}: {e}"}

summary = {"commit": read(os.path.join(bundle, "COMMIT")),
           "device": read(os.path.join(logs, "device.csv"), lambda f: f.read().strip().splitlines()[-1]),
           "passed": status == 0,
           "nccl": read(os.path.join(logs, "nccl.txt")),
           "ptxas": read(os.path.join(logs, "ptxas.txt")),
           "steps": {}}
steps = read(os.path.join(logs, "steps.tsv"), lambda f: f.read().splitlines())
for line in steps if isinstance(steps, list) else []:
    name, result, seconds = line.split("\t")
    summary["steps"][name] = {"result": result, "seconds": int(seconds)}

def bench(name):
    return read(os.path.join(logs, name + ".out"), json.load)

def start(b):
    """What a first step cost, from a bench JSON."""
    if "error" in b:
        return b
    keep = ("first_step_seconds", "prepare_seconds", "build_seconds", "step_ms_median")
    result = {k: b.get(k) for k in keep}
    kernels = (b.get("session") or {}).get("kernels") or {}
    result["kernels"] = {k: kernels.get(k) for k in (
        "launches", "modules", "arch", "ptxas", "cubins_from_cache", "cubins_assembled",
        "jit_modules", "assemble_seconds", "load_seconds", "notes")}
    return result

cold, warm = bench("cold-start"), bench("warm-start")
summary["cold_start"] = start(cold)
summary["warm_start"] = start(warm)
summary["calib"] = warm
summary["calib_cuda_graph"] = bench("bench-calib-f32-graph")
for precision in ("tf32", "bf16"):
    summary[f"calib_{precision}"] = bench(f"bench-calib-{precision}")
summary["calib_tf32_255_registers"] = bench("bench-calib-tf32-255-registers")
summary["calib_resnet50_bf16"] = bench("bench-calib-resnet50-bf16")
table = os.path.join(out, "scnet50-b64-kernels.csv")
summary["per_kernel"] = dict(warm.get("per_kernel") or {}, file=os.path.basename(table),
                             written=os.path.exists(table))

def training(run):
    lines = read(os.path.join(logs, run + ".metrics.jsonl"),
                 lambda f: [json.loads(l) for l in f if l.strip()])
    if isinstance(lines, dict):
        return lines
    windows = [l["images_per_second"] for l in lines if "images_per_second" in l]
    # The first window includes the first step (graph capture, first launches).
    steady = windows[1:] or windows
    return {"images_per_second_median": statistics.median(steady) if steady else None,
            "images_per_second_windows": windows, "last": lines[-2:]}

for key, run in [("train_cuda", "train-cuda"), ("train_cuda_graph", "train-cuda-graph"),
                 ("train_cuda_replicas", "train-cuda-replicas"),
                 ("train_cuda_launch", "train-cuda-launch")]:
    summary[key] = training(run)
summary["train_cuda_launch"]["processes"] = read(os.path.join(logs, "launch-world.txt"))

def train_lines(run):
    lines = read(os.path.join(logs, run + ".metrics.jsonl"),
                 lambda f: [json.loads(l) for l in f if l.strip()])
    return lines if isinstance(lines, list) else []

# Staging: the copy's time and how much of it the steps hid; the same losses without it.
staged, unstaged = train_lines("train-cuda"), train_lines("train-cuda-unstaged")
copy = [l for l in staged if "batch_copy_seconds" in l]
summary["staging"] = {
    "batch_copy_seconds": sum(l["batch_copy_seconds"] for l in copy),
    "batch_copy_exposed_seconds": sum(l["batch_copy_exposed_seconds"] for l in copy),
    "batch_copy_exposed_fraction_median": statistics.median(
        [l["batch_copy_exposed_fraction"] for l in copy]) if copy else None,
    "same_losses_as_unstaged": bool(staged) and
        [l.get("loss") for l in staged] == [l.get("loss") for l in unstaged],
    "unstaged": training("train-cuda-unstaged"),
}
ev_cuda, ev_ref = bench("eval-cuda"), bench("eval-reference")
summary["eval_cuda"] = {"cuda": ev_cuda, "reference": ev_ref}
if "error" not in ev_cuda and "error" not in ev_ref:
    summary["eval_cuda"]["same_top1_top5"] = all(ev_cuda.get(k) == ev_ref.get(k) for k in ("top1", "top5"))
    summary["eval_cuda"]["loss_relative_error"] = abs(ev_cuda["loss"] - ev_ref["loss"]) / max(abs(ev_ref["loss"]), 1e-12)
for key, name in [("pytorch", "pytorch.json"), ("pytorch_resnet50", "pytorch-resnet50.json")]:
    if os.path.exists(os.path.join(logs, name)):
        summary[key] = read(os.path.join(logs, name), json.load)
# torch.compile ran last, on its own: its runs join the eager ones.
compiled = read(os.path.join(logs, "pytorch-compile.json"), json.load)
if isinstance(summary.get("pytorch"), dict) and "runs" in compiled:
    summary["pytorch"].setdefault("runs", []).extend(compiled["runs"])
elif "runs" in compiled:
    summary["pytorch"] = compiled
with open(os.path.join(out, "gpu-check.json"), "w") as f:
    json.dump(summary, f, indent=1)
print(json.dumps({k: summary[k] for k in ("passed", "cold_start", "warm_start")}, indent=1)[:3000])
PY
tar -czf "$out/gpu-check-logs.tar.gz" -C "$work" logs
for f in "$bundle"/scnet50-b64-*launches.json; do [ -f "$f" ] && cp "$f" "$out/"; done
rm -rf "$work"
echo "gpu-check: finished in $(( $(date +%s) - started ))s, status $status; wrote $(ls "$out" | tr '\n' ' ')"
exit $status
