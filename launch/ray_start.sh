#!/usr/bin/env bash
# Start a Ray cluster by hand (token authentication on), then run rlframe against it.
#   head:    launch/ray_start.sh head  [--num-gpus 8] [--resources='{"node_learn": 1000}']
#   worker:  launch/ray_start.sh worker HEAD_IP:6379 [--num-gpus 8] [--resources='{"node_gen": 1000}']
#   run:     .venv/bin/rlframe doctor cluster=ray_cluster ...  then  .venv/bin/rlframe train cluster=ray_cluster ...
# Every node needs the same project checkout and environment (launch/install.sh) and the same token: by default
# the head writes one to ~/.ray/auth_token (copy that file to every worker node and to where you submit
# from), or give it as RAY_AUTH_TOKEN, or as a file named by RAY_AUTH_TOKEN_PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
ROLE=${1:?usage: $0 head|worker [HEAD_ADDR] [extra ray start args]}
shift
RAY=${RAY:-.venv/bin/ray}
export RAY_AUTH_MODE=token      # a multi-node Ray always authenticates (only rlframe's private one does not)
have_token() { [ -n "${RAY_AUTH_TOKEN:-}" ] || [ -s "${RAY_AUTH_TOKEN_PATH:-$HOME/.ray/auth_token}" ]; }
case "$ROLE" in
  head)
    if ! have_token; then   # 256 random bits, readable by this user only (what `ray get-auth-token --generate` makes)
      TOKEN_FILE=${RAY_AUTH_TOKEN_PATH:-$HOME/.ray/auth_token}
      (umask 077; mkdir -p "$(dirname "$TOKEN_FILE")"; od -An -tx1 -N32 /dev/urandom | tr -d ' \n' > "$TOKEN_FILE")
      echo "[ray_start] new token in $TOKEN_FILE: copy it to every node" >&2
    fi
    exec $RAY start --head --port="${RAY_PORT:-6379}" --dashboard-host=127.0.0.1 "$@" ;;
  worker)
    ADDR=${1:?worker needs HEAD_IP:PORT}; shift
    have_token || { echo "[ray_start] no token: copy the head's ~/.ray/auth_token here, or set RAY_AUTH_TOKEN" >&2; exit 2; }
    exec $RAY start --address="$ADDR" "$@" ;;
  *) echo "unknown role $ROLE (head|worker)" >&2; exit 2 ;;
esac
