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

npm run --silent build
npx biome check .
npx tsc -p tsconfig.json --noEmit

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
