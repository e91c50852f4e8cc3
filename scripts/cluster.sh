#!/usr/bin/env bash
# A Ray cluster of a head and worker nodes on 127.0.0.1 (pet/serve/cluster.py says how):
#   scripts/cluster.sh start [--workers 1] [--config deployments/cluster.yaml]
#   scripts/cluster.sh status | stop-node w1 | stop
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
py="${PYTHON:-$here/.venv/bin/python}"
exec "$py" -m pet.serve.cluster "$@"
