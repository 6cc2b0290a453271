#!/usr/bin/env bash
# npm run bench -- [--quick] [--backends memory,file,etcd,postgres,redis,zookeeper,mysql] [--out DIR]
# npm run bench -- --latency [--backends etcd,postgres,mysql,redis,zookeeper] [--rtt 10,50] [--rounds N] [--untracked]
#
# Compiles Baton and the bench with tsc (the same compiler options as `npm run build`) into
# .bench/dist (not dist/, which other work rebuilds at any time: a run must measure one build) and
# runs the compiled JavaScript with plain node: Baton is measured as users run it, never
# through tsx. Servers are started by test/harness on free loopback ports.
set -euo pipefail
cd "$(dirname "$0")/.."

backends="memory,file,etcd,postgres,redis,zookeeper,mysql"
prev=""
for arg in "$@"; do
  if [ "$prev" = "--backends" ]; then backends="$arg"; fi
  case "$arg" in --backends=*) backends="${arg#--backends=}" ;; esac
  prev="$arg"
done
servers=()
case ",$backends," in *,etcd,*) servers+=(etcd) ;; esac
case ",$backends," in *,postgres,*) servers+=(postgres) ;; esac
case ",$backends," in *,redis,*) servers+=(redis) ;; esac
case ",$backends," in *,zookeeper,*) servers+=(zookeeper) ;; esac
case ",$backends," in *,mysql,*) servers+=(mariadb) ;; esac
if [ "${#servers[@]}" -gt 0 ]; then bash scripts/ensure-servers.sh "${servers[@]}"; fi

echo "bench: compiling (tsc -p bench/tsconfig.json)" >&2
# Type errors elsewhere in the tree (work in progress) must not stop a measurement of what
# compiles; tsc still emits, and the errors are shown.
if ! npx tsc -p bench/tsconfig.json; then
  echo "bench: tsc reported errors (above); running the emitted JavaScript anyway" >&2
fi

# Servers keep their data in memory, as in the test suite.
export BATON_HARNESS_TMPDIR="${BATON_HARNESS_TMPDIR:-/dev/shm}"
# npm run bench -- --latency ...: the round-trip bench (bench/latency.ts) instead.
for arg in "$@"; do
  if [ "$arg" = "--latency" ]; then exec node .bench/dist/bench/latency.js "$@"; fi
done
exec node .bench/dist/bench/run.js "$@"
