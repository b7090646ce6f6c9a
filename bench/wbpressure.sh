#!/usr/bin/env bash
# bench/wbpressure.sh: a write-back cache under sustained pressure, through
# NBD, with fio (issue 19). Each row runs one workload for RUNTIME seconds
# against a fresh daemon, on one of two slow cores:
#
#   delay     a malloc core wrapped in bdev_delay, DELAY_US on every read and
#             write, any number of IOs at once
#   limited   the same, admitting at most LIMIT IOs at a time (bdev_delay's
#             max_inflight, ours), as a real disk's limited parallelism
#
# and, for each core, these servers, one after the other:
#
#   core        the delayed core alone, exported directly: the reference
#   blockcache  OCF wb: a malloc cache in front of that core
#   base        the same for a second build (BASE_REV, BASE_BLOCKCACHE)
#
# Workloads, 4 KiB, QD16, one connection (fio's nbd engine):
#
#   zipf-write    random writes, Zipf(ZIPF) over ZIPF_MIB (1 GiB)
#   uniform-write random writes, uniform over 4x the cache size
#   zipf-mix      70/30 random reads/writes, Zipf(ZIPF) over ZIPF_MIB
#
# It prints per row the steady-state IOPS (from STEADY_FROM seconds to the
# end), the ratio to the core alone
# with the target beside it, fio's p50 and p99 completion latency over the
# whole run, the dirty ratio at the end and the write hit ratio
# (bdev_ocf_get_stats), then the time series: IOPS and dirty ratio every
# SAMPLE seconds.
#
# Not part of `make test`. Run from anywhere:  bench/wbpressure.sh
# Knobs (environment):
#   RUNTIME=60      seconds of each run
#   SAMPLE=2        seconds between IOPS and dirty-ratio samples
#   STEADY_FROM=10  the steady state starts here (seconds)
#   DELAY_US=1000   core latency in µs, reads and writes, avg and p99 alike
#   LIMIT=4         max_inflight of the limited core
#   QD=16           fio iodepth (one connection)
#   ZIPF=1.1        Zipf exponent of the zipf rows
#   ZIPF_MIB=1024   range of the zipf rows (fio --size)
#   CACHE_MIB=256   malloc cache bdev size; uniform-write covers 4x this
#   CORE_MIB=2048   malloc core bdev size
#   LINE_KIB=4      cache line size of the OCF volume
#   ROWS="..."      subset of the workloads above, by name
#   CORES="..."     subset of the cores (delay limited)
#   SERVER_CPUS=, FIO_CPUS=   taskset CPU lists for the servers and for fio
#                   (default: nothing pinned)
#   REV=commit      build that commit (git archive) instead of the working tree
#   BLOCKCACHE=path use this binary instead of building anything
#   BASE_REV=commit, BASE_BLOCKCACHE=path   also run this blockcache ("base");
#                   the limited core needs a build with max_inflight (f5dc88e
#                   or later); an older one's limited rows are skipped
#   KEEP=1          keep the work directory (fio JSON and logs, server logs)
set -euo pipefail

RUNTIME=${RUNTIME:-60}
SAMPLE=${SAMPLE:-2}
STEADY_FROM=${STEADY_FROM:-10}
DELAY_US=${DELAY_US:-1000}
LIMIT=${LIMIT:-4}
QD=${QD:-16}
ZIPF=${ZIPF:-1.1}
ZIPF_MIB=${ZIPF_MIB:-1024}
CACHE_MIB=${CACHE_MIB:-256}
CORE_MIB=${CORE_MIB:-2048}
LINE_KIB=${LINE_KIB:-4}
ROWS=${ROWS:-zipf-write uniform-write zipf-mix}
CORES=${CORES:-delay limited}
SERVER_CPUS=${SERVER_CPUS:-}
FIO_CPUS=${FIO_CPUS:-}
BASE_REV=${BASE_REV:-}
BASE_BLOCKCACHE=${BASE_BLOCKCACHE:-}
KEEP=${KEEP:-0}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$here/lib.sh"

whole_numbers RUNTIME SAMPLE STEADY_FROM DELAY_US LIMIT QD ZIPF_MIB CACHE_MIB CORE_MIB LINE_KIB
at_least_one SAMPLE
[ "$STEADY_FROM" -lt "$RUNTIME" ] || die "STEADY_FROM=$STEADY_FROM: want less than RUNTIME=$RUNTIME"
[ $((STEADY_FROM % SAMPLE)) = 0 ] || die "STEADY_FROM=$STEADY_FROM: want a multiple of SAMPLE=$SAMPLE"
at_least_one LIMIT
[ $((4 * CACHE_MIB)) -le "$CORE_MIB" ] || die "CORE_MIB=$CORE_MIB: uniform-write needs 4x CACHE_MIB=$CACHE_MIB"
[ "$ZIPF_MIB" -le "$CORE_MIB" ] || die "ZIPF_MIB=$ZIPF_MIB exceeds CORE_MIB=$CORE_MIB"
for r in $ROWS; do
	case $r in zipf-write | uniform-write | zipf-mix) ;; *) die "ROWS: unknown row $r (zipf-write uniform-write zipf-mix)" ;; esac
done
for c in $CORES; do
	case $c in delay | limited) ;; *) die "CORES: unknown core $c (delay limited)" ;; esac
done

# --- dependencies ---------------------------------------------------------
need_tools fio:fio nbdinfo:libnbd-bin jq:jq
need_fio_nbd

server=
sampler=
# stop_server kills the running server (SIGKILL: --bare keeps nothing, and a
# shutdown flush of a full write-back cache would only cost time).
stop_server() {
	if [ -n "$sampler" ]; then
		kill "$sampler" 2>/dev/null || true
		wait "$sampler" 2>/dev/null || true
		sampler=
	fi
	if [ -n "$server" ]; then
		kill -KILL "$server" 2>/dev/null || true
		wait "$server" 2>/dev/null || true
		server=
	fi
}
work_dir wbpressure stop_server

# --- blockcache binaries ------------------------------------------------------
# bc_bin, and base_bin if BASE_REV or BASE_BLOCKCACHE (lib.sh's binaries).
binaries ./cmd/blockcache sum
servers=(core blockcache)
[ -z "$base_bin" ] || servers+=(base)

pinning

# --- configs ------------------------------------------------------------------
# config CORE SERVER: the SPDK JSON config of SERVER on CORE. The core alone
# exports Delay1; the cached servers export Cache0 over it.
config() {
	local limit=""
	[ "$1" != limited ] || limit=", \"max_inflight\": $LIMIT"
	local bdevs exp
	bdevs="  {\"method\": \"bdev_malloc_create\", \"params\": {\"name\": \"Malloc1\", \"num_blocks\": $((CORE_MIB * 2048)), \"block_size\": 512}},
  {\"method\": \"bdev_delay_create\", \"params\": {\"base_bdev_name\": \"Malloc1\", \"name\": \"Delay1\",
   \"avg_read_latency\": $DELAY_US, \"p99_read_latency\": $DELAY_US, \"avg_write_latency\": $DELAY_US, \"p99_write_latency\": $DELAY_US$limit}}"
	exp=Delay1
	if [ "$2" != core ]; then
		bdevs="  {\"method\": \"bdev_malloc_create\", \"params\": {\"name\": \"Malloc0\", \"num_blocks\": $((CACHE_MIB * 2048)), \"block_size\": 512}},
$bdevs,
  {\"method\": \"bdev_ocf_create\", \"params\": {\"name\": \"Cache0\", \"mode\": \"wb\", \"cache_line_size\": $LINE_KIB, \"cache_bdev_name\": \"Malloc0\", \"core_bdev_name\": \"Delay1\"}}"
		exp=Cache0
	fi
	cat <<EOF
{"subsystems": [
 {"subsystem": "bdev", "config": [
$bdevs
 ]},
 {"subsystem": "nbd", "config": [
  {"method": "nbd_start_disk", "params": {"bdev_name": "$exp"}}
 ]}
]}
EOF
}

URI=
RPC=
# start_server CORE SERVER TAG: a fresh daemon for one run, on its own
# Unix sockets; sets URI and RPC. Returns 1 (with the log kept) if it does
# not come up.
start_server() {
	local core=$1 srv=$2 tag=$3 bin=$bc_bin exp=Cache0
	[ "$srv" != base ] || bin=$base_bin
	[ "$srv" != core ] || exp=Delay1
	config "$core" "$srv" >"$work/$tag.config.json"
	RPC=$work/$tag.rpc
	local sock=$work/$tag.nbd
	"${server_pin[@]}" "$bin" serve --bare -r "$RPC" --nbd-listen "" --nbd-socket "$sock" \
		--config "$work/$tag.config.json" --log-level warn >"$work/$tag.server.log" 2>&1 &
	server=$!
	URI="nbd+unix:///$exp?socket=$sock"
	wait_nbd "$URI" 300 "$server" && return 0
	stop_server
	return 1
}

# --- machine ------------------------------------------------------------------
machine_lines "$(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
echo "fio:        $(fio --version)   $(go version 2>/dev/null | cut -d' ' -f3)"
echo "blockcache: $("$bc_bin" --version), $bc_desc"
[ -z "$base_bin" ] || echo "base:       $("$base_bin" --version), $base_desc"
echo "setup:      OCF wb, ${LINE_KIB} KiB lines, malloc cache ${CACHE_MIB} MiB + malloc core ${CORE_MIB} MiB in bdev_delay ${DELAY_US} us;"
echo "            cores: delay (no limit), limited (max_inflight ${LIMIT}); reference: the core alone, exported directly"
echo "servers:    ${servers[*]}, each run a fresh daemon (--bare, NBD on a Unix socket)"
echo "pinning:    servers ${SERVER_CPUS:-any CPU}, fio ${FIO_CPUS:-any CPU}"
echo "load avg:   $(loadavg) at start (other work on the machine skews results)"
echo "runs:       fio nbd 4k QD$QD, ${RUNTIME}s each; IOPS and dirty ratio every ${SAMPLE}s; steady state ${STEADY_FROM}-${RUNTIME}s"
echo

# --- fio --------------------------------------------------------------------
# fio_args ROW: the workload's fio arguments.
fio_args() {
	case $1 in
	zipf-write) echo "--rw=randwrite --random_distribution=zipf:$ZIPF --size=${ZIPF_MIB}M" ;;
	uniform-write) echo "--rw=randwrite --random_distribution=random --size=$((4 * CACHE_MIB))M" ;;
	zipf-mix) echo "--rw=randrw --rwmixread=70 --random_distribution=zipf:$ZIPF --size=${ZIPF_MIB}M" ;;
	esac
}

# stats BIN: bdev_ocf_get_stats of Cache0 on the running server, as
# "dirty_percent write_hits writes requests".
stats() {
	"$1" rpc bdev_ocf_get_stats '{"name":"Cache0"}' -s "$RPC" --timeout 5s 2>/dev/null |
		jq -r '.requests as $r | "\(.usage.dirty.percentage) \($r.wr_hits.count) \($r.wr_total.count) \($r.rd_total.count + $r.wr_total.count)"'
}

# sample_dirty BIN OUT: from the first request on, so that the samples line
# up with fio's IOPS log however long fio takes to start, append "seconds
# dirty_percent" to OUT every SAMPLE seconds until RUNTIME (an empty
# percentage when the daemon did not answer).
sample_dirty() {
	local bin=$1 out=$2 t0 i=1 now wait_ms s reqs
	while :; do
		s=$(stats "$bin" || true)
		reqs=${s##* }
		[ "${reqs:-0}" = 0 ] || break
		sleep 0.02
	done
	t0=$(date +%s%N)
	while [ $((i * SAMPLE)) -le "$RUNTIME" ]; do
		now=$(date +%s%N)
		wait_ms=$(((t0 + i * SAMPLE * 1000000000 - now) / 1000000))
		[ "$wait_ms" -le 0 ] || sleep "$(awk -v m="$wait_ms" 'BEGIN { printf "%.3f", m / 1000 }')"
		s=$(stats "$bin" || true)
		echo "$((i * SAMPLE)) ${s%% *}" >>"$out"
		i=$((i + 1))
	done
}

# run CORE SERVER ROW: one run; appends its summary line to $work/results:
# "core row server steady_iops p50_us p99_us dirty_pct write_hit_pct".
run() {
	local core=$1 srv=$2 row=$3 tag bin=$bc_bin out s iops
	tag=$core.$row.$srv
	[ "$srv" != base ] || bin=$base_bin
	if ! start_server "$core" "$srv" "$tag"; then
		echo "  $tag: the server did not come up (log below); row skipped" >&2
		sed 's/^/    /' "$work/$tag.server.log" | tail -5 >&2
		echo "$core $row $srv - - - - -" >>"$work/results"
		return
	fi
	out=$work/$tag
	: >"$out.dirty"
	if [ "$srv" != core ]; then
		sample_dirty "$bin" "$out.dirty" &
		sampler=$!
	fi
	# shellcheck disable=SC2046 # fio_args is word-split on purpose
	"${fio_pin[@]}" fio --name="$tag" --ioengine=nbd --uri="$URI" --bs=4k --iodepth="$QD" $(fio_args "$row") \
		--time_based --runtime="$RUNTIME" --norandommap \
		--write_iops_log="$out" --log_avg_msec=$((SAMPLE * 1000)) --unified_rw_reporting=both \
		--output-format=json --output="$out.json" >/dev/null 2>"$out.err" ||
		{ cat "$out.err" >&2; die "fio $tag failed"; }
	local dirty=- hit=-
	if [ "$srv" != core ]; then
		# The sampler stops by itself after its sample at RUNTIME.
		wait "$sampler" 2>/dev/null || true
		sampler=
		s=$(stats "$bin") || die "bdev_ocf_get_stats on $tag failed"
		read -r dirty wh wt _ <<<"$s"
		hit=$(awk -v h="$wh" -v t="$wt" 'BEGIN { printf "%.1f", t ? 100 * h / t : 0 }')
	fi
	stop_server
	# IOPS per sample: reads and writes of one window summed, by window.
	awk -F', *' -v w=$((SAMPLE * 1000)) '{ b = int(($1 + w / 4) / w); v[b] += $2; if (b > n) n = b }
		END { for (i = 1; i <= n; i++) print i * w / 1000, v[i] + 0 }' "${out}_iops.1.log" >"$out.iops"
	# Steady IOPS: all IOs of the run (fio's count) less those of the first
	# STEADY_FROM seconds (their windows' IOPS x SAMPLE), over the rest of the
	# run. fio may leave out the last window of the log; this does not.
	local early
	early=$(awk -v from="$STEADY_FROM" -v s="$SAMPLE" '$1 <= from { n += $2 * s } END { print n + 0 }' "$out.iops")
	iops=$(jq -r --argjson early "$early" --argjson from "$STEADY_FROM" \
		'.jobs[0].mixed | (.total_ios - $early) / (.runtime / 1000 - $from) | floor' "$out.json")
	jq -r --arg iops "$iops" --arg dirty "$dirty" --arg hit "$hit" --arg id "$core $row $srv" \
		'.jobs[0].mixed.clat_ns.percentile as $p |
		"\($id) \($iops) \($p["50.000000"] / 1000 | floor) \($p["99.000000"] / 1000 | floor) \($dirty) \($hit)"' \
		"$out.json" >>"$work/results"
	printf '  %-7s %-13s %-10s %7s IOPS (%s-%ss)  p50 %6s us  p99 %6s us  dirty %s%%  write hits %s%%  load %s\n' \
		"$core" "$row" "$srv" "$iops" "$STEADY_FROM" "$RUNTIME" \
		"$(tail -1 "$work/results" | cut -d' ' -f5)" "$(tail -1 "$work/results" | cut -d' ' -f6)" "$dirty" "$hit" "$(loadavg)" >&2
}

# target CORE ROW: the issue's target as "ratio p99_us" (p99 0: none).
target() {
	case $1:$2 in
	delay:zipf-write) echo "4 5000" ;;
	limited:zipf-write) echo "2 0" ;;
	*:uniform-write) echo "0.9 0" ;;
	delay:zipf-mix) echo "3 0" ;;
	limited:zipf-mix) echo "2 0" ;;
	esac
}

: >"$work/results"
for core in $CORES; do
	for row in $ROWS; do
		for srv in "${servers[@]}"; do
			run "$core" "$srv" "$row"
		done
	done
done

# --- report -------------------------------------------------------------------
echo "load avg:   $(loadavg) at end"
echo "IOPS = IOs in ${STEADY_FROM}-${RUNTIME}s per second; ratio = IOPS / the core alone's, same core;"
echo "p50/p99 = fio completion latency over the whole run (reads and writes); dirty = dirty share of the cache"
echo "at the end; hits = write hits / writes (bdev_ocf_get_stats)"
echo
printf '| %-7s | %-13s | %-10s | %7s | %6s | %-20s | %7s | %7s | %6s | %6s |\n' \
	core row server IOPS ratio target "p50 us" "p99 us" dirty hits
printf '|---------|---------------|------------|--------:|-------:|----------------------|--------:|--------:|-------:|-------:|\n'
# shellcheck disable=SC2094 # the loop and the awk in it only read results
while read -r core row srv iops p50 p99 dirty hit; do
	ref=$(awk -v c="$core" -v r="$row" '$1 == c && $2 == r && $3 == "core" { print $4 }' "$work/results")
	ratio=- tgt=
	if [ "$srv" != core ] && [ "$iops" != - ] && [ -n "$ref" ] && [ "$ref" != - ] && [ "$ref" != 0 ]; then
		ratio=$(awk -v a="$iops" -v b="$ref" 'BEGIN { printf "%.2f", a / b }')
		read -r want wantp99 <<<"$(target "$core" "$row")"
		tgt=">=${want}x"
		[ "$wantp99" = 0 ] || tgt+=", p99<$((wantp99 / 1000))ms"
		if awk -v r="$ratio" -v w="$want" -v p="$p99" -v wp="$wantp99" 'BEGIN { exit !(r >= w && (wp == 0 || p < wp)) }'; then
			tgt+=" met"
		else
			tgt+=" MISS"
		fi
	fi
	[ "$dirty" = - ] || dirty+="%"
	[ "$hit" = - ] || hit+="%"
	printf '| %-7s | %-13s | %-10s | %7s | %6s | %-20s | %7s | %7s | %6s | %6s |\n' \
		"$core" "$row" "$srv" "$iops" "$ratio" "$tgt" "$p50" "$p99" "$dirty" "$hit"
done <"$work/results"

echo
echo "time series, one value per ${SAMPLE}s: IOPS in thousands, and (cached servers) dirty %"
for core in $CORES; do
	for row in $ROWS; do
		for srv in "${servers[@]}"; do
			f=$work/$core.$row.$srv
			[ -s "$f.iops" ] || continue
			printf '%-7s %-13s %-10s kIOPS  %s\n' "$core" "$row" "$srv" \
				"$(awk '{ printf "%s%.1f", (NR > 1 ? " " : ""), $2 / 1000 }' "$f.iops")"
			[ -s "$f.dirty" ] || continue
			printf '%-7s %-13s %-10s dirty  %s\n' "$core" "$row" "$srv" \
				"$(awk '{ printf "%s%s", (NR > 1 ? " " : ""), ($2 == "" ? "-" : int($2 + 0.5)) }' "$f.dirty")"
		done
	done
done
