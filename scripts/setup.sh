#!/usr/bin/env bash
# Installs what calib needs on a fresh Debian machine with a Rust toolchain. Idempotent:
# anything already present is left alone.
set -euo pipefail

need_apt=()
[ -d /usr/share/datasets/fashion-mnist ] || need_apt+=(dataset-fashion-mnist)
command -v dot >/dev/null 2>&1 || need_apt+=(graphviz)
python3 -c 'import ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
# Headless Chromium for the HTML report's browser tests (tests/report*.rs).
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing ${need_apt[*]} (apt)"
  sudo_cmd=""
  [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found; install Rust (rustup) first" >&2
  exit 1
fi
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt >/dev/null 2>&1 || true

# NVIDIA's ptxas (runs without a GPU) into the repository's .venv, for the PTX checks.
repo="$(cd "$(dirname "$0")/.." && pwd)"
if ! ls "$repo"/.venv/lib/python3*/site-packages/nvidia/cuda_nvcc/bin/ptxas >/dev/null 2>&1; then
  echo "setup: installing ptxas (nvidia-cuda-nvcc-cu12) into .venv (pip)"
  [ -x "$repo/.venv/bin/pip" ] || python3 -m venv "$repo/.venv"
  "$repo/.venv/bin/pip" install -q nvidia-cuda-nvcc-cu12==12.9.86
fi
