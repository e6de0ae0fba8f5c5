# Shell pieces shared by scripts/bench-db and scripts/ab-db (sourced, not run).

# The client port of Concord DB member $1 (1-based) in a local three-member cluster; its peer
# port is the next one.
CONCORD_BASE_PORT=22379
concord_client_port() { echo $((CONCORD_BASE_PORT + 10 * ($1 - 1))); }

# Runs member $2 of a local three-member Concord DB cluster with binary $1 and data under $3,
# with etcd's heartbeat and election timeout, and with its share of the cores as its worker
# threads, as `concord db up` runs its members (CONCORD_WORKER_THREADS overrides the share;
# "default" leaves the server's default, a worker per core; a binary without the flag gets
# its default too). Start it in the background (`concord_member … &`): it replaces the
# subshell, so `$!` is the server's process id.
concord_member() {
  local binary="$1" id="$2" data_dir="$3" cluster="" j workers=()
  for j in 1 2 3; do cluster+="$j=127.0.0.1:$(($(concord_client_port "$j") + 1)),"; done
  local share=$(($(nproc) / 3))
  share=${CONCORD_WORKER_THREADS:-$((share > 0 ? share : 1))}
  if [[ $share != default ]] && "$binary" db serve --help 2>/dev/null | grep -q -- --worker-threads
  then
    workers=(--worker-threads "$share")
  fi
  CONCORD_LOG=warn exec "$binary" db serve --id "$id" --data-dir "$data_dir" \
    --listen-client "127.0.0.1:$(concord_client_port "$id")" \
    --listen-peer "127.0.0.1:$(($(concord_client_port "$id") + 1))" \
    --initial-cluster "${cluster%,}" --heartbeat 100ms --election-timeout 1s "${workers[@]}"
}

# CPU time (user + system, in clock ticks) the processes given have used.
process_ticks() {
  local pid total=0 fields
  for pid in "$@"; do
    fields=$(cut -d' ' -f14,15 "/proc/$pid/stat")
    total=$((total + ${fields% *} + ${fields#* }))
  done
  echo "$total"
}

# Writes the page cache's dirty data out and waits (at most 60 s) until less than 16 MiB is
# dirty or under writeback: a build just before a run leaves gigabytes whose writeback, 30 s
# later, slows every sync of whichever system is measured then (a run's first 1-client
# round once took 5 ms at p99 for it, against 1.3 ms on a settled disk).
settle_disk() {
  local _ kib
  sync
  for _ in $(seq 1 120); do
    kib=$(awk '/^(Dirty|Writeback):/ {sum += $2} END {print sum}' /proc/meminfo)
    (( kib < 16384 )) && return
    sleep 0.5
  done
}
