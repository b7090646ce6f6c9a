#!/usr/bin/env bash
# bench/remote.sh: a cache in front of a remote core, through NBD both ways,
# with fio (issue 15). The remote core is an NBD server, nbdkit memory
# behind its delay filter (DELAY_US on every read and write); each server
# below gets its own, all started alike:
#
#   blockcache-wt  OCF wt: malloc cache in front of an NBD client bdev
#                  (bdev_nbd_client_create) connected to its remote
#   blockcache-wb  the same in wb
#   nbdkit-cache   nbdkit's cache filter over its nbd plugin connected to its
#                  remote: cache=writethrough cache-on-read=true
#                  cache-min-block-size=4K cache-max-size=CACHE_MIB
#                  (in writeback the filter does not bound its dirty data)
#   server         the remote alone: the reference of every ratio
#
# Workloads, 4 KiB, QD16, one connection (fio's nbd engine), Zipf(ZIPF) over
# SIZE, in one run on the same servers:
#
#   read  random reads
#   mix   random 70/30 reads/writes
#
# For each workload: a warm-up run on each server (not measured), then REPS
# rounds in which every server runs once, the order rotated from round to
# round. It prints medians with their spread (min-max) of IOPS (reads and
# writes), fio's p50 and p99 read completion latency, the read hit ratio
# over the measured runs (bdev_ocf_get_stats deltas), and the ratios the
# targets of issue 15 use, each round's runs forming a pair.
#
# Not part of `make test`. Run from anywhere:  bench/remote.sh
# Knobs (environment):
#   DELAY_US=1000   remote latency in µs, reads and writes (a multiple of
#                   1000: nbdkit's delay filter counts in ms)
#   SIZE=1g         fio --size, the range the Zipf distribution covers
#   REPS=5          measured runs of each server per workload
#   WARM=10         seconds of the warm-up run of each server per workload
#   RUNTIME=10      seconds of each measured run
#   QD=16           fio iodepth (one connection)
#   ZIPF=1.1        fio random_distribution=zipf:ZIPF
#   CACHE_MIB=256   malloc cache bdev size, and nbdkit's cache-max-size
#   CORE_MIB=2048   size of each remote (nbdkit memory)
#   CONNECTIONS=1   connections of blockcache's NBD client bdev to its remote
#                   (nbdkit memory advertises multi-conn)
#   WORKLOADS="read mix"   subset of the workloads
#   SERVERS="..."   subset of the servers above, by name
#   SERVER_CPUS=, FIO_CPUS=   taskset CPU lists for the servers (remotes
#                   included) and for fio (default: nothing pinned)
#   REV=commit      build that commit (git archive) instead of the working tree
#   BLOCKCACHE=path use this binary instead of building anything
#   KEEP=1          keep the work directory (fio JSON, server logs)
set -euo pipefail

DELAY_US=${DELAY_US:-1000}
SIZE=${SIZE:-1g}
REPS=${REPS:-5}
WARM=${WARM:-10}
RUNTIME=${RUNTIME:-10}
QD=${QD:-16}
ZIPF=${ZIPF:-1.1}
CACHE_MIB=${CACHE_MIB:-256}
CORE_MIB=${CORE_MIB:-2048}
CONNECTIONS=${CONNECTIONS:-1}
WORKLOADS=${WORKLOADS:-read mix}
SERVERS=${SERVERS:-}
SERVER_CPUS=${SERVER_CPUS:-}
FIO_CPUS=${FIO_CPUS:-}
KEEP=${KEEP:-0}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$here/lib.sh"

delay_in_ms
whole_numbers REPS WARM RUNTIME QD CACHE_MIB CORE_MIB CONNECTIONS
at_least_one REPS RUNTIME
for w in $WORKLOADS; do
	case $w in read | mix) ;; *) die "WORKLOADS: unknown workload $w (read, mix)" ;; esac
done
[ -n "$WORKLOADS" ] || die "WORKLOADS is empty"

# --- dependencies ---------------------------------------------------------
need_tools fio:fio nbdkit:nbdkit nbdinfo:libnbd-bin jq:jq
need_fio_nbd
nbdkit --filter=delay --filter=cache nbd --dump-plugin >/dev/null 2>&1 ||
	die "nbdkit lacks its delay or cache filter or its nbd plugin (Debian: package nbdkit)"

work_dir remote stop_servers

# --- blockcache binary ----------------------------------------------------------
binaries ./cmd/blockcache sum

all=(blockcache-wt blockcache-wb nbdkit-cache server)
pick_servers "${all[@]}"

# --- servers ----------------------------------------------------------------
pinning
ms=$((DELAY_US / 1000))
remote=(--filter=delay memory "${CORE_MIB}M" "rdelay=${ms}ms" "wdelay=${ms}ms")

# config MODE SOCKET: an SPDK JSON config with the OCF volume Cache0 in MODE
# on the NBD client bdev Remote0 connected to SOCKET, exported over NBD.
config() {
	cat <<EOF
{"subsystems": [
 {"subsystem": "bdev", "config": [
  {"method": "bdev_malloc_create", "params": {"name": "Malloc0", "num_blocks": $((CACHE_MIB * 2048)), "block_size": 512}},
  {"method": "bdev_nbd_client_create", "params": {"name": "Remote0", "uri": "nbd+unix:///?socket=$2", "connections": $CONNECTIONS}},
  {"method": "bdev_ocf_create", "params": {"name": "Cache0", "mode": "$1", "cache_bdev_name": "Malloc0", "core_bdev_name": "Remote0"}}
 ]},
 {"subsystem": "nbd", "config": [
  {"method": "nbd_start_disk", "params": {"bdev_name": "Cache0"}}
 ]}
]}
EOF
}

declare -A URI PID RPC
# start_servers: each server's remote, then the servers, each on its own
# Unix sockets.
start_servers() {
	local srv sock rsock
	for srv in "${servers[@]}"; do
		rsock=$work/$srv.remote.nbd
		"${server_pin[@]}" nbdkit --exit-with-parent -f -U "$rsock" "${remote[@]}" >"$work/$srv.remote.log" 2>&1 &
		pids+=($!)
		wait_nbd "nbd+unix:///?socket=$rsock" 300 $! ||
			{ cat "$work/$srv.remote.log" >&2; die "the remote of $srv did not come up"; }
	done
	for srv in "${servers[@]}"; do
		sock=$work/$srv.nbd
		rsock=$work/$srv.remote.nbd
		case $srv in
		blockcache-*)
			config "${srv#blockcache-}" "$rsock" >"$work/$srv.json"
			"${server_pin[@]}" "$bc_bin" serve --bare -r "$work/$srv.rpc" --nbd-listen "" --nbd-socket "$sock" \
				--config "$work/$srv.json" --log-level warn >"$work/$srv.log" 2>&1 &
			URI[$srv]="nbd+unix:///Cache0?socket=$sock"
			RPC[$srv]=$work/$srv.rpc
			;;
		nbdkit-cache)
			# The cache filter keeps its cache in a deleted file under TMPDIR.
			TMPDIR=$work "${server_pin[@]}" nbdkit --exit-with-parent -f -U "$sock" --filter=cache nbd "socket=$rsock" \
				cache=writethrough cache-on-read=true cache-min-block-size=4K "cache-max-size=${CACHE_MIB}M" >"$work/$srv.log" 2>&1 &
			URI[$srv]="nbd+unix:///?socket=$sock"
			;;
		server)
			URI[$srv]="nbd+unix:///?socket=$rsock"
			continue
			;;
		esac
		pids+=($!)
		PID[$srv]=$!
	done
	for srv in "${servers[@]}"; do
		[ -n "${PID[$srv]:-}" ] || continue
		wait_nbd "${URI[$srv]}" 300 "${PID[$srv]}" ||
			{ cat "$work/$srv.log" >&2; die "$srv did not come up"; }
	done
}

# --- machine ------------------------------------------------------------------
machine_lines
echo "fio:        $(fio --version)   nbdkit: $(nbdkit --version | head -1)   $(go version 2>/dev/null | cut -d' ' -f3)"
echo "blockcache: $("$bc_bin" --version), $bc_desc"
echo "remote:     nbdkit ${remote[*]} (one each, Unix sockets)"
echo "setup:      blockcache-*: malloc cache ${CACHE_MIB} MiB, OCF wt or wb, core bdev_nbd_client_create to its remote"
echo "            (${CONNECTIONS} connection(s));"
echo "            nbdkit-cache: --filter=cache nbd socket=REMOTE cache=writethrough cache-on-read=true"
echo "            cache-min-block-size=4K cache-max-size=${CACHE_MIB}M; server: the remote alone"
echo "servers:    ${servers[*]}"
echo "pinning:    servers ${SERVER_CPUS:-any CPU}, fio ${FIO_CPUS:-any CPU}"
echo "load avg:   $(loadavg) at start (other work on the machine skews results)"
echo "runs:       fio nbd 4k QD$QD zipf:$ZIPF over $SIZE: ${WORKLOADS// /, } (mix: 70/30 randrw);"
echo "            ${WARM}s warm-up each, then ${REPS} rounds of ${RUNTIME}s per server, rotated"
echo

# --- fio --------------------------------------------------------------------
# run_fio SERVER WORKLOAD SECONDS TAG -> prints "iops read_p50_us read_p99_us"
run_fio() {
	local srv=$1 wl=$2 secs=$3 tag=$4 out rw=(--rw=randread)
	[ "$wl" = read ] || rw=(--rw=randrw --rwmixread=70)
	out=$work/$wl.$srv.$tag.json
	"${fio_pin[@]}" fio --name="remote-$wl" --ioengine=nbd --uri="${URI[$srv]}" \
		"${rw[@]}" --bs=4k --iodepth="$QD" --random_distribution="zipf:$ZIPF" \
		--size="$SIZE" --time_based --runtime="$secs" --randrepeat=0 --norandommap \
		--output-format=json --output="$out" >/dev/null 2>"$out.err" ||
		{ cat "$out.err" >&2; die "fio ($wl, $tag) against $srv failed"; }
	jq -r '.jobs[0] | "\(.read.iops + .write.iops) \(.read.clat_ns.percentile["50.000000"] / 1000) \(.read.clat_ns.percentile["99.000000"] / 1000)"' "$out"
}

# pair_ratio WORKLOAD A B -> "median [min-max]" of A's IOPS over B's, each
# round's runs of A and B forming a pair.
pair_ratio() {
	paste -d' ' "$work/$1.$2" "$work/$1.$3" | awk '{ print $1 / $7 }' >"$work/ratio"
	spread "$work/ratio" 1 "%.2f"
}
# target WORKLOAD A B -> the issue's target for A/B IOPS, or "-".
target() {
	case "$1:$2:$3" in
	read:blockcache-*:server) echo ">= 3" ;;
	mix:blockcache-wb:server) echo ">= 3" ;;
	mix:blockcache-wt:server) echo ">= 2" ;;
	read:blockcache-*:nbdkit-cache) echo ">= 5" ;;
	*) echo - ;;
	esac
}

table=$work/table
ratios=$work/ratios
printf '| %-8s | %-13s | %-22s | %-20s | %-22s | %6s |\n' workload server "IOPS [min-max]" "rd p50 us [min-max]" "rd p99 us [min-max]" "hit %" >"$table"
printf '|----------|---------------|------------------------|----------------------|------------------------|-------:|\n' >>"$table"
printf '| %-8s | %-30s | %-19s | %-6s |\n' workload ratio "IOPS [min-max]" target >"$ratios"
printf '|----------|--------------------------------|---------------------|--------|\n' >>"$ratios"
nsrv=${#servers[@]}
echo "== starting ${servers[*]}; load avg $(loadavg)" >&2
start_servers
for wl in $WORKLOADS; do
	for srv in "${servers[@]}"; do
		: >"$work/$wl.$srv"
		if [ "$WARM" -gt 0 ]; then
			r=$(run_fio "$srv" "$wl" "$WARM" warm)
			read -r iops _ <<<"$r"
			printf '  %-5s warm  %-14s %8.0f IOPS\n' "$wl" "$srv" "$iops" >&2
		fi
	done
	for rep in $(seq "$REPS"); do
		for i in $(seq 0 $((nsrv - 1))); do
			srv=${servers[$(((i + rep - 1) % nsrv))]}
			measure_run "$wl" "$srv" "$rep" "rd "
		done
	done
	for srv in "${servers[@]}"; do
		f=$work/$wl.$srv
		hit=-
		[ -z "${RPC[$srv]:-}" ] || hit=$(awk '{ h += $4; t += $5 } END { printf "%.2f", t ? 100 * h / t : 0 }' "$f")
		printf '| %-8s | %-13s | %-22s | %-20s | %-22s | %6s |\n' "$wl" "$srv" \
			"$(spread "$f" 1 %.0f)" "$(spread "$f" 2 %.0f)" "$(spread "$f" 3 %.0f)" "$hit" >>"$table"
	done
	for pair in blockcache-wt:server blockcache-wb:server nbdkit-cache:server \
		blockcache-wt:nbdkit-cache blockcache-wb:nbdkit-cache; do
		a=${pair%%:*} b=${pair#*:}
		if ! have "$a" || ! have "$b"; then
			continue
		fi
		printf '| %-8s | %-30s | %-19s | %-6s |\n' "$wl" "$a / $b" "$(pair_ratio "$wl" "$a" "$b")" "$(target "$wl" "$a" "$b")" >>"$ratios"
	done
done
stop_servers

echo
echo "load avg:   $(loadavg) at end"
echo "medians of $REPS runs of ${RUNTIME}s, with [min-max]; IOPS = reads + writes; rd p50/p99 = fio's read"
echo "completion latency (clat); hit % = read hits / reads of Cache0 over the measured runs (bdev_ocf_get_stats)"
cat "$table"
echo
echo "ratios: median [min-max] over the $REPS rounds of A/B IOPS, A and B run in the same round;"
echo "targets of issue 15 beside them"
cat "$ratios"
