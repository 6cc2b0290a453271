#!/usr/bin/env bash
# npm run chaos -- --backend <name> [...]: see test/chaos/main.ts. Makes sure the server the
# backend needs is installed, then runs the chaos runner with tsx.
set -euo pipefail
cd "$(dirname "$0")/.."
prev=""
backend=""
for arg in "$@"; do
  if [ "$prev" = "--backend" ]; then backend="$arg"; fi
  case "$arg" in --backend=*) backend="${arg#--backend=}" ;; esac
  prev="$arg"
done
case "$backend" in
  etcd*) bash scripts/ensure-servers.sh etcd ;;
  postgres) bash scripts/ensure-servers.sh postgres ;;
  redis*) bash scripts/ensure-servers.sh redis ;;
  zookeeper*) bash scripts/ensure-servers.sh zookeeper ;;
esac
export BATON_HARNESS_TMPDIR="${BATON_HARNESS_TMPDIR:-/dev/shm}"
if [ "${CHAOS_SOAK:-}" = 1 ]; then
  exec node --expose-gc --import tsx test/chaos/soak.ts "$@"
fi
exec node --import tsx test/chaos/main.ts "$@"
