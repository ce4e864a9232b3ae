#!/usr/bin/env bash
# A local two-node Tacit cluster for trying scale-out by hand: two `tacit serve` processes on
# loopback sharing one PostgreSQL database, with NATS carrying delivery notices between them.
# Ctrl-C stops both nodes (the database is kept; pass --reset to start from an empty one).
#
#   scripts/cluster.sh            # nodes on ws://127.0.0.1:7881/v1 and ws://127.0.0.1:7882/v1
#   scripts/cluster.sh --reset    # drop and recreate the cluster's database first
#
# Environment: TACIT_CLUSTER_ADMIN_URL (default postgres://postgres@127.0.0.1:5432/postgres, used
# to create the database), TACIT_CLUSTER_DB (default tacit_cluster), TACIT_NATS_URL (default
# nats://127.0.0.1:4222), TACIT_CLUSTER_PORTS (default "7881 7882").
set -euo pipefail
cd "$(dirname "$0")/.."

admin_url=${TACIT_CLUSTER_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}
db_name=${TACIT_CLUSTER_DB:-tacit_cluster}
nats_url=${TACIT_NATS_URL:-nats://127.0.0.1:4222}
read -r -a ports <<<"${TACIT_CLUSTER_PORTS:-7881 7882}"
database_url="${admin_url%/*}/$db_name"

command -v psql >/dev/null || { echo "psql is needed to create the cluster's database (apt-get install postgresql-client)" >&2; exit 1; }
if ! psql "$admin_url" -Atc 'SELECT 1' >/dev/null 2>&1; then
  echo "PostgreSQL is not reachable at $admin_url; start it (pg_ctlcluster ... main start) or set TACIT_CLUSTER_ADMIN_URL" >&2
  exit 1
fi
if [ "${1:-}" = "--reset" ]; then
  psql "$admin_url" -qc "DROP DATABASE IF EXISTS $db_name WITH (FORCE)"
fi
if [ -z "$(psql "$admin_url" -Atc "SELECT 1 FROM pg_database WHERE datname = '$db_name'")" ]; then
  psql "$admin_url" -qc "CREATE DATABASE $db_name"
  echo "created database $db_name"
fi

cargo build --release -q -p tacit-cli
bin=target/release/tacit
logs=$(mktemp -d -t tacit-cluster.XXXXXX)
pids=()
stop() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  echo "stopped; logs in $logs"
}
trap stop EXIT INT TERM

urls=()
for i in "${!ports[@]}"; do
  n=$((i + 1))
  TACIT_LOG=${TACIT_LOG:-info} "$bin" serve --node-id "node-$n" --listen "127.0.0.1:${ports[$i]}" \
    --data "$logs/node-$n" --database "$database_url" --nats "$nats_url" \
    >"$logs/node-$n.log" 2>&1 &
  pids+=("$!")
  urls+=("ws://127.0.0.1:${ports[$i]}/v1")
done
for i in "${!ports[@]}"; do
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/${ports[$i]}") 2>/dev/null && break
    kill -0 "${pids[$i]}" 2>/dev/null || { echo "node-$((i + 1)) exited:" >&2; cat "$logs/node-$((i + 1)).log" >&2; exit 1; }
    sleep 0.1
  done
done

cat <<MSG
Two nodes are up (logs: $logs/node-*.log):
  node-1  ${urls[0]}
  node-2  ${urls[1]}
database $db_name, NATS $nats_url

Try it in another terminal: alice on node 1, bob on node 2 (and both nodes as his fallback list):
  export TACIT_PASSPHRASE=demo
  TACIT_PROFILE=/tmp/alice $bin account create alice --server ${urls[0]}
  TACIT_PROFILE=/tmp/bob   $bin account create bob   --server ${urls[1]},${urls[0]}
  TACIT_PROFILE=/tmp/bob   $bin listen &
  TACIT_PROFILE=/tmp/alice $bin send bob "across nodes"
Kill a node (kill \$(pgrep -f node-2)) and bob's client moves to the other one.
Ctrl-C here stops both nodes.
MSG
wait
