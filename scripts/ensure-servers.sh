#!/usr/bin/env bash
# Ensure the server binaries needed by the real-server test harness exist.
#
#   bash scripts/ensure-servers.sh [etcd] [postgres] [redis] [zookeeper] [mariadb] [hosts] [chromium]
#
# `hosts`: iproute2 (`ip netns`, veth, bridges) and setpriv, for the network-namespace
# hosts of test/harness/hosts.ts (partition tests; they also need root).
# `chromium`: the browser of the status page's test (test/harness/chromium.ts), from
# Debian's packages: no browser download.
#
# With no arguments, all are ensured. Idempotent and fast when everything is
# already installed (no apt-get calls at all in that case). Installs missing
# Debian packages with apt-get, without letting them start system services:
# the harness (test/harness/*.ts) runs its own throwaway server processes on
# free loopback ports and must never collide with a system etcd on 2379 or a
# system PostgreSQL cluster.
set -euo pipefail

want_etcd=0
want_pg=0
want_redis=0
want_zk=0
want_mariadb=0
want_hosts=0
want_chromium=0
if [ "$#" -eq 0 ]; then
  want_hosts=1
  want_chromium=1
  want_etcd=1
  want_pg=1
  want_redis=1
  want_zk=1
  want_mariadb=1
fi
for arg in "$@"; do
  case "$arg" in
    etcd) want_etcd=1 ;;
    postgres | postgresql | pg) want_pg=1 ;;
    redis) want_redis=1 ;;
    zookeeper | zk) want_zk=1 ;;
    mariadb | mysql) want_mariadb=1 ;;
    hosts) want_hosts=1 ;;
    chromium) want_chromium=1 ;;
    -h | --help)
      sed -n '2,10p' "$0"
      exit 0
      ;;
    *)
      echo "ensure-servers: unknown server '$arg' (expected: etcd, postgres, redis, zookeeper, mariadb, hosts, chromium)" >&2
      exit 2
      ;;
  esac
done

log() { echo "ensure-servers: $*" >&2; }

have_etcd() { [ -x /usr/bin/etcd ] || command -v etcd >/dev/null 2>&1; }
# Prefer the Debian layout (/usr/lib/postgresql/<ver>/bin); /usr/local/bin may
# or may not have symlinks depending on the machine.
pg_bindir() {
  local d
  # shellcheck disable=SC2012
  d="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
  if [ -n "$d" ] && [ -x "$d/initdb" ] && [ -x "$d/postgres" ] && [ -x "$d/pg_ctl" ]; then
    echo "$d"
    return 0
  fi
  return 1
}
have_pg() { pg_bindir >/dev/null && id -u postgres >/dev/null 2>&1; }
# The harness runs the server class straight from Debian's jars with its own
# zoo.cfg (test/harness/zookeeper.ts), so it needs the jars and a java binary.
have_zk() { [ -f /usr/share/java/zookeeper.jar ] && command -v java >/dev/null 2>&1; }
# The harness runs mariadb-install-db and mariadbd itself (test/harness/mariadb.ts).
have_mariadb() { [ -x /usr/sbin/mariadbd ] && command -v mariadb-install-db >/dev/null 2>&1; }
have_chromium() { [ -x /usr/bin/chromium ]; }
have_hosts() { [ -x /usr/sbin/ip ] && command -v setpriv >/dev/null 2>&1; }
have_redis() { command -v redis-server >/dev/null 2>&1 && command -v redis-sentinel >/dev/null 2>&1; }

packages=()
if [ "$want_etcd" -eq 1 ] && ! have_etcd; then packages+=(etcd-server); fi
if [ "$want_pg" -eq 1 ] && ! have_pg; then packages+=(postgresql); fi
if [ "$want_redis" -eq 1 ] && ! have_redis; then packages+=(redis-server redis-sentinel); fi
if [ "$want_zk" -eq 1 ] && ! have_zk; then packages+=(zookeeper); fi
if [ "$want_mariadb" -eq 1 ] && ! have_mariadb; then packages+=(mariadb-server); fi
if [ "$want_hosts" -eq 1 ] && ! have_hosts; then packages+=(iproute2 util-linux); fi
if [ "$want_chromium" -eq 1 ] && ! have_chromium; then packages+=(chromium); fi

if [ "${#packages[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO=(sudo); else
      log "need root to install ${packages[*]}"
      exit 1
    fi
  else
    SUDO=()
  fi

  # Keep maintainer scripts from starting services (etcd on 2379, the
  # Debian "main" PostgreSQL cluster). If a policy-rc.d already exists
  # (e.g. the Docker one that exits 101) leave it alone; otherwise install a
  # temporary one and remove it afterwards.
  policy=/usr/sbin/policy-rc.d
  created_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$policy" >/dev/null
    "${SUDO[@]}" chmod 755 "$policy"
    created_policy=1
  fi
  cleanup_policy() {
    if [ "$created_policy" -eq 1 ]; then "${SUDO[@]}" rm -f "$policy"; fi
  }
  trap cleanup_policy EXIT

  log "installing: ${packages[*]}"
  export DEBIAN_FRONTEND=noninteractive
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
    "${packages[@]}" >&2

  cleanup_policy
  trap - EXIT

  # Belt and braces: if a system etcd got started anyway (e.g. systemd with
  # a unit that ignores policy-rc.d), stop and disable it so 2379 stays free.
  if [[ " ${packages[*]} " == *" etcd-server "* ]]; then
    if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
      "${SUDO[@]}" systemctl disable --now etcd.service >/dev/null 2>&1 || true
    else
      "${SUDO[@]}" service etcd stop >/dev/null 2>&1 || true
      "${SUDO[@]}" update-rc.d etcd disable >/dev/null 2>&1 || true
    fi
  fi
  if [[ " ${packages[*]} " == *" zookeeper "* ]]; then
    if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
      "${SUDO[@]}" systemctl disable --now zookeeper.service >/dev/null 2>&1 || true
    fi
  fi
  for svc in redis-server redis-sentinel; do
    if [[ " ${packages[*]} " == *" $svc "* ]]; then
      if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
        "${SUDO[@]}" systemctl disable --now "$svc.service" >/dev/null 2>&1 || true
      else
        "${SUDO[@]}" service "$svc" stop >/dev/null 2>&1 || true
        "${SUDO[@]}" update-rc.d "$svc" disable >/dev/null 2>&1 || true
      fi
    fi
  done
  if [[ " ${packages[*]} " == *" mariadb-server "* ]]; then
    if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
      "${SUDO[@]}" systemctl disable --now mariadb.service >/dev/null 2>&1 || true
    else
      "${SUDO[@]}" service mariadb stop >/dev/null 2>&1 || true
      "${SUDO[@]}" update-rc.d mariadb disable >/dev/null 2>&1 || true
    fi
  fi
  if [[ " ${packages[*]} " == *" postgresql "* ]]; then
    if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
      "${SUDO[@]}" systemctl disable --now postgresql.service >/dev/null 2>&1 || true
    else
      "${SUDO[@]}" service postgresql stop >/dev/null 2>&1 || true
      "${SUDO[@]}" update-rc.d postgresql disable >/dev/null 2>&1 || true
    fi
  fi
fi

# Verify.
status=0
if [ "$want_etcd" -eq 1 ]; then
  if have_etcd; then
    etcd_bin="$(command -v etcd || echo /usr/bin/etcd)"
    log "etcd: $etcd_bin ($("$etcd_bin" --version 2>/dev/null | head -n 1))"
  else
    log "etcd: NOT available"
    status=1
  fi
fi
if [ "$want_pg" -eq 1 ]; then
  if have_pg; then
    bindir="$(pg_bindir)"
    log "postgres: $bindir ($("$bindir/postgres" --version 2>/dev/null))"
  else
    log "postgres: NOT available (need /usr/lib/postgresql/*/bin and a 'postgres' user)"
    status=1
  fi
fi
if [ "$want_redis" -eq 1 ]; then
  if have_redis; then
    log "redis: $(command -v redis-server) ($(redis-server --version 2>/dev/null | head -n 1))"
  else
    log "redis: NOT available (need redis-server and redis-sentinel)"
    status=1
  fi
fi
if [ "$want_zk" -eq 1 ]; then
  if have_zk; then
    log "zookeeper: /usr/share/java/zookeeper.jar ($(readlink -f /usr/share/java/zookeeper.jar))"
  else
    log "zookeeper: NOT available (need /usr/share/java/zookeeper.jar and java)"
    status=1
  fi
fi
if [ "$want_mariadb" -eq 1 ]; then
  if have_mariadb; then
    log "mariadb: /usr/sbin/mariadbd ($(/usr/sbin/mariadbd --version 2>/dev/null | head -n 1))"
  else
    log "mariadb: NOT available (need /usr/sbin/mariadbd and mariadb-install-db)"
    status=1
  fi
fi
if [ "$want_hosts" -eq 1 ]; then
  if have_hosts; then
    log "hosts: /usr/sbin/ip ($(/usr/sbin/ip -V 2>/dev/null)), $(command -v setpriv)"
  else
    log "hosts: NOT available (need /usr/sbin/ip from iproute2 and setpriv from util-linux)"
    status=1
  fi
fi
if [ "$want_chromium" -eq 1 ]; then
  if have_chromium; then
    log "chromium: /usr/bin/chromium ($(/usr/bin/chromium --version 2>/dev/null | head -n 1))"
  else
    log "chromium: NOT available (need /usr/bin/chromium)"
    status=1
  fi
fi
exit "$status"
