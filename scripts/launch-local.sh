#!/usr/bin/env bash
# Starts N copies of a command as the ranks of one group on this machine, with the
# environment torchrun gives its processes (RANK, WORLD_SIZE, LOCAL_RANK = RANK,
# MASTER_ADDR=127.0.0.1, MASTER_PORT from the environment or 29500): a launcher for
# machines without PyTorch. Waits for every rank; exits with the first failure's code.
# A rank that fails makes the others fail too (calib's group notices a departed peer).
#
#   bash scripts/launch-local.sh N calib train --backend cuda --out runs/dp
set -uo pipefail
if [ $# -lt 2 ] || ! [[ $1 =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: launch-local.sh N COMMAND [ARGS...]  (N: processes, at least 1)" >&2
  exit 2
fi
world=$1; shift
pids=()
for (( rank = 0; rank < world; rank++ )); do
  RANK=$rank WORLD_SIZE=$world LOCAL_RANK=$rank MASTER_ADDR=127.0.0.1 \
    MASTER_PORT=${MASTER_PORT:-29500} "$@" &
  pids+=($!)
done
code=0
for pid in "${pids[@]}"; do
  wait "$pid" || { c=$?; [ "$code" = 0 ] && code=$c; }
done
exit $code
