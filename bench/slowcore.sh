#!/usr/bin/env bash
# bench/slowcore.sh: a cache in front of a slow core, through NBD, with fio.
# In one run, with the same core latency and the same working sets:
#
#   blockcache    OCF volume: malloc cache in front of a malloc core wrapped
#                 in bdev_delay (DELAY_US on every read and write)
#   blockcache-0  the same with a 0 µs delay: what the hits alone can do
#   base, base-0  the same two for a second build (BASE_REV, BASE_BLOCKCACHE)
#   nbdkit-delay  nbdkit memory behind its delay filter: the slow core alone
#   nbdkit-cache  nbdkit's cache filter over the delay filter over memory
#
# Each working set gets fresh servers, a warm-up run on each (not measured),
# then REPS rounds in which every server runs once: a build and its 0 µs
# reference back to back (a pair), the pairs and the nbdkit servers rotated
# from round to round. It prints medians with their spread (min-max) of
# IOPS and fio's p50 and p99 completion latency, the hit ratio over the
# measured runs (bdev_ocf_get_stats deltas), and the ratios the targets of
# issue 13 use.
#
# Not part of `make test`. Run from anywhere:  bench/slowcore.sh
# Knobs (environment):
#   DELAY_US=1000   core latency in µs, reads and writes, avg and p99 alike
#                   (a multiple of 1000: nbdkit's delay filter counts in ms)
#   SETS="128m 1g"  working sets (fio --size), one table block each
#   REPS=5          measured runs of each server per set (median is reported)
#   WARM=15         seconds of the warm-up run of each server per set
#   RUNTIME=15      seconds of each measured run
#   QD=16           fio iodepth (one connection)
#   ZIPF=1.1        fio random_distribution=zipf:ZIPF
#   MODE=wt         cache mode of the OCF volumes
#   CACHE_MIB=256   malloc cache bdev size, and nbdkit's cache-max-size
#   CORE_MIB=2048   malloc core bdev size, and nbdkit's memory size
#   SERVERS="..."   subset of the servers above, by name
#   SERVER_CPUS=, FIO_CPUS=   taskset CPU lists for the servers and for fio
#                   (default: nothing pinned, as users run it)
#   REV=commit      build that commit (git archive) instead of the working tree
#   BLOCKCACHE=path use this binary instead of building anything
#   BASE_REV=commit, BASE_BLOCKCACHE=path   also run this blockcache ("base")
#   KEEP=1          keep the work directory (fio JSON, server logs)
set -euo pipefail

DELAY_US=${DELAY_US:-1000}
SETS=${SETS:-128m 1g}
REPS=${REPS:-5}
WARM=${WARM:-15}
RUNTIME=${RUNTIME:-15}
QD=${QD:-16}
ZIPF=${ZIPF:-1.1}
MODE=${MODE:-wt}
CACHE_MIB=${CACHE_MIB:-256}
CORE_MIB=${CORE_MIB:-2048}
SERVERS=${SERVERS:-}
SERVER_CPUS=${SERVER_CPUS:-}
FIO_CPUS=${FIO_CPUS:-}
BASE_REV=${BASE_REV:-}
BASE_BLOCKCACHE=${BASE_BLOCKCACHE:-}
KEEP=${KEEP:-0}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$here/lib.sh"

delay_in_ms
whole_numbers REPS WARM RUNTIME QD CACHE_MIB CORE_MIB
at_least_one REPS RUNTIME
[ -n "$SETS" ] || die "SETS is empty"

# --- dependencies ---------------------------------------------------------
need_tools fio:fio nbdkit:nbdkit nbdinfo:libnbd-bin jq:jq
need_fio_nbd
nbdkit --filter=delay --filter=cache null --dump-plugin >/dev/null 2>&1 ||
	die "nbdkit lacks its delay or cache filter (Debian: package nbdkit)"

# The servers of the current set are in pids; stop_servers stops them.
work_dir slowcore stop_servers

# --- blockcache binaries ------------------------------------------------------
# bc_bin, and base_bin if BASE_REV or BASE_BLOCKCACHE (lib.sh's binaries).
binaries ./cmd/blockcache sum

all=(blockcache blockcache-0)
[ -z "$base_bin" ] || all+=(base base-0)
all+=(nbdkit-delay nbdkit-cache)
pick_servers "${all[@]}"

# --- servers ----------------------------------------------------------------
pinning

# config DELAY_US: an SPDK JSON config with the OCF volume Cache0 on a core
# delayed by DELAY_US, exported over NBD.
config() {
	cat <<EOF
{"subsystems": [
 {"subsystem": "bdev", "config": [
  {"method": "bdev_malloc_create", "params": {"name": "Malloc0", "num_blocks": $((CACHE_MIB * 2048)), "block_size": 512}},
  {"method": "bdev_malloc_create", "params": {"name": "Malloc1", "num_blocks": $((CORE_MIB * 2048)), "block_size": 512}},
  {"method": "bdev_delay_create", "params": {"base_bdev_name": "Malloc1", "name": "Delay1",
   "avg_read_latency": $1, "p99_read_latency": $1, "avg_write_latency": $1, "p99_write_latency": $1}},
  {"method": "bdev_ocf_create", "params": {"name": "Cache0", "mode": "$MODE", "cache_bdev_name": "Malloc0", "core_bdev_name": "Delay1"}}
 ]},
 {"subsystem": "nbd", "config": [
  {"method": "nbd_start_disk", "params": {"bdev_name": "Cache0"}}
 ]}
]}
EOF
}
config "$DELAY_US" >"$work/config-delay.json"
config 0 >"$work/config-0.json"
kit_delay=(--filter=delay memory "${CORE_MIB}M" "rdelay=$((DELAY_US / 1000))ms" "wdelay=$((DELAY_US / 1000))ms")
kit_cache=(--filter=cache "${kit_delay[@]}" cache=writethrough cache-on-read=true "cache-max-size=${CACHE_MIB}M")

declare -A URI PID RPC
# start_servers SET: fresh servers, each on its own Unix sockets.
start_servers() {
	local set=$1 srv bin cfg sock
	for srv in "${servers[@]}"; do
		sock=$work/$srv.nbd
		rm -f "$sock" "$work/$srv.rpc"
		case $srv in
		blockcache* | base*)
			bin=$bc_bin
			[[ $srv != base* ]] || bin=$base_bin
			cfg=$work/config-delay.json
			[[ $srv != *-0 ]] || cfg=$work/config-0.json
			"${server_pin[@]}" "$bin" serve --bare -r "$work/$srv.rpc" --nbd-listen "" --nbd-socket "$sock" \
				--config "$cfg" --log-level warn >"$work/$srv.$set.log" 2>&1 &
			URI[$srv]="nbd+unix:///Cache0?socket=$sock"
			RPC[$srv]=$work/$srv.rpc
			;;
		nbdkit-delay)
			"${server_pin[@]}" nbdkit --exit-with-parent -f -U "$sock" "${kit_delay[@]}" >"$work/$srv.$set.log" 2>&1 &
			URI[$srv]="nbd+unix:///?socket=$sock"
			;;
		nbdkit-cache)
			# The cache filter keeps its cache in a deleted file under TMPDIR.
			TMPDIR=$work "${server_pin[@]}" nbdkit --exit-with-parent -f -U "$sock" "${kit_cache[@]}" >"$work/$srv.$set.log" 2>&1 &
			URI[$srv]="nbd+unix:///?socket=$sock"
			;;
		esac
		pids+=($!)
		PID[$srv]=$!
	done
	for srv in "${servers[@]}"; do
		wait_nbd "${URI[$srv]}" 300 "${PID[$srv]}" ||
			{ cat "$work/$srv.$set.log" >&2; die "$srv did not come up for set $set"; }
	done
}

# --- machine ------------------------------------------------------------------
machine_lines
echo "fio:        $(fio --version)   nbdkit: $(nbdkit --version | head -1)   $(go version 2>/dev/null | cut -d' ' -f3)"
echo "blockcache: $("$bc_bin" --version), $bc_desc"
[ -z "$base_bin" ] || echo "base:       $("$base_bin" --version), $base_desc"
echo "setup:      OCF $MODE, malloc cache ${CACHE_MIB} MiB + malloc core ${CORE_MIB} MiB in bdev_delay ${DELAY_US} us (-0: 0 us);"
echo "            nbdkit memory ${CORE_MIB}M under --filter=delay (${kit_delay[*]:3}),"
echo "            nbdkit-cache adds --filter=cache cache=writethrough cache-on-read=true cache-max-size=${CACHE_MIB}M"
echo "servers:    ${servers[*]} (NBD on Unix sockets)"
echo "pinning:    servers ${SERVER_CPUS:-any CPU}, fio ${FIO_CPUS:-any CPU}"
echo "load avg:   $(loadavg) at start (other work on the machine skews results)"
echo "runs:       fio nbd randread 4k QD$QD zipf:$ZIPF; per set fresh servers, ${WARM}s warm-up each,"
echo "            then ${REPS} rounds of ${RUNTIME}s per server, each build next to its 0 us reference, rotated"
echo

# --- fio --------------------------------------------------------------------
# run_fio SERVER SET SECONDS TAG -> prints "iops p50_us p99_us"
run_fio() {
	local srv=$1 set=$2 secs=$3 tag=$4 out
	out=$work/$set.$srv.$tag.json
	"${fio_pin[@]}" fio --name="slowcore-$set" --ioengine=nbd --uri="${URI[$srv]}" \
		--rw=randread --bs=4k --iodepth="$QD" --random_distribution="zipf:$ZIPF" \
		--size="$set" --time_based --runtime="$secs" --randrepeat=0 --norandommap \
		--output-format=json --output="$out" >/dev/null 2>"$out.err" ||
		{ cat "$out.err" >&2; die "fio ($tag, set $set) against $srv failed"; }
	jq -r '.jobs[0].read | "\(.iops) \(.clat_ns.percentile["50.000000"] / 1000) \(.clat_ns.percentile["99.000000"] / 1000)"' "$out"
}

# pair_ratio SET A B COLUMN -> "median [min-max]" of A/B over the reps, each
# rep's runs of A and B forming a pair (same rotation round).
pair_ratio() {
	paste -d' ' "$work/$1.$2" "$work/$1.$3" |
		awk -v c="$4" -v n=6 '{ print $c / $(c + n) }' >"$work/ratio"
	spread "$work/ratio" 1 "%.2f"
}

table=$work/table
ratios=$work/ratios
printf '| %-5s | %-12s | %-22s | %-20s | %-22s | %6s | %-18s |\n' set server "IOPS [min-max]" "p50 us [min-max]" "p99 us [min-max]" "hit %" "miss us [min-max]" >"$table"
printf '|-------|--------------|------------------------|----------------------|------------------------|-------:|--------------------|\n' >>"$table"
printf '| %-5s | %-27s | %-19s | %-17s |\n' set ratio "IOPS [min-max]" "p50 [min-max]" >"$ratios"
printf '|-------|-----------------------------|---------------------|-------------------|\n' >>"$ratios"
# A build and its 0 µs reference form a group that runs back to back, so
# that each round gives a pair measured under the same conditions; the
# groups rotate from round to round, and within a group the first swaps.
groups=()
for g in "blockcache blockcache-0" "base base-0" nbdkit-delay nbdkit-cache; do
	members=()
	for s in $g; do
		! have "$s" || members+=("$s")
	done
	[ ${#members[@]} = 0 ] || groups+=("${members[*]}")
done
ngroups=${#groups[@]}
loads=
for set in $SETS; do
	loads+="${loads:+; }$set: $(loadavg)"
	echo "== set $set: starting ${servers[*]}; load avg $(loadavg)" >&2
	start_servers "$set"
	for srv in "${servers[@]}"; do
		: >"$work/$set.$srv"
		if [ "$WARM" -gt 0 ]; then
			r=$(run_fio "$srv" "$set" "$WARM" warm)
			read -r iops _ <<<"$r"
			printf '  %-5s warm  %-13s %8.0f IOPS\n' "$set" "$srv" "$iops" >&2
		fi
	done
	for rep in $(seq "$REPS"); do
		order=()
		for i in $(seq 0 $((ngroups - 1))); do
			g=${groups[$(((i + rep - 1) % ngroups))]}
			if [ $((rep % 2)) = 0 ]; then
				g=$(echo "$g" | awk '{ for (i = NF; i > 0; i--) printf "%s ", $i }')
			fi
			read -ra members <<<"$g"
			order+=("${members[@]}")
		done
		for srv in "${order[@]}"; do
			measure_run "$set" "$srv" "$rep"
		done
	done
	stop_servers
	for srv in "${servers[@]}"; do
		f=$work/$set.$srv
		hit=- miss=-
		if [ -n "${RPC[$srv]:-}" ]; then
			hit=$(awk '{ h += $4; t += $5 } END { printf "%.2f", t ? 100 * h / t : 0 }' "$f")
			miss=$(spread "$f" 6 %.0f)
		fi
		printf '| %-5s | %-12s | %-22s | %-20s | %-22s | %6s | %-18s |\n' "$set" "$srv" \
			"$(spread "$f" 1 %.0f)" "$(spread "$f" 2 %.0f)" "$(spread "$f" 3 %.0f)" "$hit" "$miss" >>"$table"
	done
	for pair in blockcache:blockcache-0 base:base-0 blockcache:nbdkit-cache base:nbdkit-cache \
		blockcache:nbdkit-delay blockcache:base blockcache-0:base-0; do
		a=${pair%%:*} b=${pair#*:}
		if ! have "$a" || ! have "$b"; then
			continue
		fi
		p50=-
		case $b in nbdkit-*) ;; *) p50=$(pair_ratio "$set" "$a" "$b" 2) ;; esac
		printf '| %-5s | %-27s | %-19s | %-17s |\n' "$set" "$a / $b" "$(pair_ratio "$set" "$a" "$b" 1)" "$p50" >>"$ratios"
	done
done

echo
echo "load avg:   $(loadavg) at end; at the start of each set: $loads"
echo "medians of $REPS runs of ${RUNTIME}s, with [min-max]; p50/p99 = fio completion latency (clat);"
echo "hit % = read hits / reads of Cache0 over the measured runs (bdev_ocf_get_stats);"
echo "miss us = the volume's mean read-miss time in each run (blockcache_get_metrics), median [min-max]"
cat "$table"
echo
echo "ratios: median [min-max] over the $REPS rounds of A/B, A and B run in the same round;"
echo "targets (issue 13): blockcache / blockcache-0 IOPS >= 0.9 at 128m, >= 0.8 at 1g; p50 <= 1.5"
cat "$ratios"
