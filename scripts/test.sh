#!/usr/bin/env bash
# The whole test suite: installs what it needs (npm packages, Debian's etcd,
# PostgreSQL, Redis, ZooKeeper, MariaDB and Chromium), builds, lints, type-checks, then runs every test file. Servers are started
# by the tests themselves on free loopback ports with temporary data directories.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${CI:-}" = "true" ] || [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi
bash scripts/ensure-servers.sh etcd postgres redis zookeeper mariadb hosts chromium

# The build (src/ to dist/) and the type check of the whole tree (tests included) are two
# single-threaded tsc runs: run them side by side on the two cores, then lint.
npm run --silent build &
build=$!
typecheck=0
npx tsc -p tsconfig.json --noEmit || typecheck=$?
built=0
wait "$build" || built=$?
if [ "$built" -ne 0 ] || [ "$typecheck" -ne 0 ]; then
  echo "test.sh: build exit $built, type check exit $typecheck" >&2
  exit 1
fi
npx biome check .

# Servers keep their data in memory: creating files on this disk is slow.
export BATON_HARNESS_TMPDIR="${BATON_HARNESS_TMPDIR:-/dev/shm}"

# Tests that compare rates measured in one run (a grant rate during a fault against the
# fault-free rate), and the chaos runs that load the machine with many client processes,
# run alone afterwards (*.alone.test.ts): on a 2-core machine another file's CPU load would
# skew one side of a comparison, or starve the other file's TTL-bound fault tests.
mapfile -t files < <(find test -name '*.test.ts' ! -name '*.alone.test.ts' | sort)
mapfile -t alone < <(find test -name '*.alone.test.ts' | sort)
node --import tsx --test --test-concurrency=2 --test-timeout=300000 "${files[@]}"
if [ "${#alone[@]}" -gt 0 ]; then
  node --import tsx --test --test-concurrency=1 --test-timeout=300000 "${alone[@]}"
fi
