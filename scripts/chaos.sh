#!/usr/bin/env bash
# npm run chaos -- --backend <name> [...]: see test/chaos/main.ts. Makes sure the server the
# backend needs is installed, then runs the chaos runner with tsx.
# npm run chaos -- --partitions: the split scenarios on ZooKeeper and Redis Sentinel
# (test/partitions/*.partition.ts; needs root for network namespaces).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--partitions" ]; then
  bash scripts/ensure-servers.sh zookeeper redis hosts
  export BATON_HARNESS_TMPDIR="${BATON_HARNESS_TMPDIR:-/dev/shm}"
  exec node --import tsx --test --test-concurrency=1 test/partitions/*.partition.ts
fi
prev=""
backend=""
for arg in "$@"; do
  if [ "$prev" = "--backend" ]; then backend="$arg"; fi
  case "$arg" in --backend=*) backend="${arg#--backend=}" ;; esac
  prev="$arg"
done
case "$backend" in
  etcd-hosts) bash scripts/ensure-servers.sh etcd hosts ;;
  etcd*) bash scripts/ensure-servers.sh etcd ;;
  postgres-hosts) bash scripts/ensure-servers.sh postgres hosts ;;
  postgres) bash scripts/ensure-servers.sh postgres ;;
  zookeeper-hosts) bash scripts/ensure-servers.sh zookeeper hosts ;;
  mysql) bash scripts/ensure-servers.sh mariadb ;;
  redis*) bash scripts/ensure-servers.sh redis ;;
  zookeeper*) bash scripts/ensure-servers.sh zookeeper ;;
esac
export BATON_HARNESS_TMPDIR="${BATON_HARNESS_TMPDIR:-/dev/shm}"
if [ "${CHAOS_SOAK:-}" = 1 ]; then
  exec node --expose-gc --import tsx test/chaos/soak.ts "$@"
fi
exec node --import tsx test/chaos/main.ts "$@"
