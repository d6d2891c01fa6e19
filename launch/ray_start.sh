#!/usr/bin/env bash
# Start a Ray cluster by hand, then run rlframe on the head with cluster=ray_cluster.
#   head:    launch/ray_start.sh head  [--num-gpus 8]
#   worker:  launch/ray_start.sh worker HEAD_IP:6379 [--num-gpus 8]
#   run:     .venv/bin/rlframe train cluster=ray_cluster rollout.num_workers=4 ...
# Every node needs the same project checkout and environment (launch/install.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
ROLE=${1:?usage: $0 head|worker [HEAD_ADDR] [extra ray start args]}
shift
RAY=.venv/bin/ray
export RAY_AUTH_MODE=${RAY_AUTH_MODE:-disabled}
case "$ROLE" in
  head)   exec $RAY start --head --port=6379 --dashboard-host=127.0.0.1 "$@" ;;
  worker) ADDR=${1:?worker needs HEAD_IP:PORT}; shift; exec $RAY start --address="$ADDR" "$@" ;;
  *) echo "unknown role $ROLE (head|worker)" >&2; exit 2 ;;
esac
