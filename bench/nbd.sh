#!/usr/bin/env bash
# bench/nbd.sh: fio through NBD against blockcache (an OCF volume on malloc
# cache and core bdevs) and against nbdkit's memory plugin as the reference,
# in one run, and a table of medians and blockcache/nbdkit ratios. Optionally
# a second blockcache build (BASE_REV, BASE_BLOCKCACHE) runs alongside, for
# a before/after comparison that the machine's drift affects alike.
#
# Not part of `make test`. Run from anywhere:  bench/nbd.sh
# Knobs (environment):
#   REPS=3          repetitions of each row per server (median is reported)
#   RUNTIME=5       seconds of each fio run (plus RAMP seconds of warm-up)
#   RAMP=1          fio ramp_time in seconds, not measured
#   MODE=wt         cache mode of the OCF volume (wt, wb, ...)
#   WS_MIB=128      working set: every row does IO to the first WS_MIB MiB
#   CACHE_MIB=256   malloc cache bdev size
#   CORE_MIB=1024   malloc core bdev size (and the nbdkit memory size)
#   SEQ_QD=8        queue depth of the 128 KiB sequential rows
#   ROWS="..."      subset of rows to run, by name (see ROW_SPECS below)
#   PIN=1           pin the servers to CPU 0 and fio to CPU 1 (on a machine
#                   with 2 CPUs or more), so that each side has a CPU of its
#                   own, as SPDK's pinned reactors would; PIN=0: no pinning
#   SERVER_CPUS=, FIO_CPUS=   taskset CPU lists for the servers and for fio
#                   (override PIN's choice)
#   REV=commit      build that commit (git archive) instead of the working tree
#   BLOCKCACHE=path use this binary instead of building anything
#   BASE_REV=commit, BASE_BLOCKCACHE=path   also run this blockcache ("base")
#   PORT=10911      first TCP port; the servers use the next few
#   KEEP=1          keep the work directory (fio JSON, server logs)
#   PROFILE=1       run blockcache as bench/profile (the same daemon in-process,
#                   with net/http/pprof), take a CPU profile of its first run of
#                   each row, print the top of each and keep them (implies KEEP=1)
set -euo pipefail

REPS=${REPS:-3}
RUNTIME=${RUNTIME:-5}
RAMP=${RAMP:-1}
MODE=${MODE:-wt}
WS_MIB=${WS_MIB:-128}
CACHE_MIB=${CACHE_MIB:-256}
CORE_MIB=${CORE_MIB:-1024}
SEQ_QD=${SEQ_QD:-8}
PORT=${PORT:-10911}
KEEP=${KEEP:-0}
PROFILE=${PROFILE:-0}
[ "$PROFILE" != 1 ] || KEEP=1
PIN=${PIN:-1}
if [ "$PIN" = 1 ] && [ "$(nproc)" -ge 2 ]; then
	SERVER_CPUS=${SERVER_CPUS:-0}
	FIO_CPUS=${FIO_CPUS:-1}
fi
SERVER_CPUS=${SERVER_CPUS:-}
FIO_CPUS=${FIO_CPUS:-}
BASE_REV=${BASE_REV:-}
BASE_BLOCKCACHE=${BASE_BLOCKCACHE:-}

# name:rw:bs:iodepth
ROW_SPECS=(
	"randread-4k-qd1:randread:4k:1"
	"randread-4k-qd32:randread:4k:32"
	"randwrite-4k-qd32:randwrite:4k:32"
	"seqread-128k-qd${SEQ_QD}:read:128k:${SEQ_QD}"
	"seqwrite-128k-qd${SEQ_QD}:write:128k:${SEQ_QD}"
)
ROWS=${ROWS:-}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$here/lib.sh"

# --- dependencies ---------------------------------------------------------
need_tools fio:fio nbdkit:nbdkit nbdinfo:libnbd-bin jq:jq
if [ "$PROFILE" = 1 ]; then
	command -v curl >/dev/null || die "PROFILE=1 needs curl"
	[ -z "${BLOCKCACHE:-}" ] || die "PROFILE=1 builds bench/profile; it cannot use BLOCKCACHE"
fi
need_fio_nbd

work_dir bench stop_servers

# --- blockcache binaries ------------------------------------------------------
pkg=./cmd/blockcache
[ "$PROFILE" != 1 ] || pkg=./bench/profile
# bc_bin, and base_bin if BASE_REV or BASE_BLOCKCACHE (lib.sh's binaries).
binaries "$pkg"
servers=(blockcache)
[ -z "$base_bin" ] || servers+=(base)
servers+=(nbdkit)

# --- servers ----------------------------------------------------------------
pinning

cat >"$work/config.json" <<EOF
{"subsystems": [
 {"subsystem": "bdev", "config": [
  {"method": "bdev_malloc_create", "params": {"name": "Malloc0", "num_blocks": $((CACHE_MIB * 2048)), "block_size": 512}},
  {"method": "bdev_malloc_create", "params": {"name": "Malloc1", "num_blocks": $((CORE_MIB * 2048)), "block_size": 512}},
  {"method": "bdev_ocf_create", "params": {"name": "Cache0", "mode": "$MODE", "cache_bdev_name": "Malloc0", "core_bdev_name": "Malloc1"}}
 ]},
 {"subsystem": "nbd", "config": [
  {"method": "nbd_start_disk", "params": {"bdev_name": "Cache0"}}
 ]}
]}
EOF

declare -A URI PID
pprof_port=$((PORT + 5))
for srv in "${servers[@]}"; do
	case $srv in
	blockcache)
		port=$PORT
		if [ "$PROFILE" = 1 ]; then
			"${server_pin[@]}" "$bc_bin" -r "$work/rpc.sock" --nbd-listen "127.0.0.1:$port" \
				--config "$work/config.json" --pprof "127.0.0.1:$pprof_port" >"$work/blockcache.log" 2>&1 &
		else
			"${server_pin[@]}" "$bc_bin" serve --bare -r "$work/rpc.sock" --nbd-listen "127.0.0.1:$port" \
				--config "$work/config.json" --log-level warn >"$work/blockcache.log" 2>&1 &
		fi
		URI[$srv]="nbd://127.0.0.1:$port/Cache0"
		;;
	base)
		port=$((PORT + 1))
		"${server_pin[@]}" "$base_bin" serve --bare -r "$work/rpc-base.sock" --nbd-listen "127.0.0.1:$port" \
			--config "$work/config.json" --log-level warn >"$work/base.log" 2>&1 &
		URI[$srv]="nbd://127.0.0.1:$port/Cache0"
		;;
	nbdkit)
		port=$((PORT + 2))
		"${server_pin[@]}" nbdkit --exit-with-parent -f -p "$port" -i 127.0.0.1 memory "${CORE_MIB}M" >"$work/nbdkit.log" 2>&1 &
		URI[$srv]="nbd://127.0.0.1:$port/"
		;;
	esac
	pids+=($!)
	PID[$srv]=$!
done
for srv in "${servers[@]}"; do
	wait_nbd "${URI[$srv]}" 100 || { cat "$work/$srv.log" >&2; die "$srv did not come up"; }
done

# --- machine ------------------------------------------------------------------
machine_lines
echo "fio:        $(fio --version)   nbdkit: $(nbdkit --version | head -1)   $(go version 2>/dev/null | cut -d' ' -f3)"
if [ "$PROFILE" = 1 ]; then
	echo "blockcache: bench/profile (the daemon in-process, pprof on 127.0.0.1:$pprof_port), $bc_desc"
else
	echo "blockcache: $("$bc_bin" --version), $bc_desc"
fi
[ -z "${base_bin:-}" ] || echo "base:       $("$base_bin" --version), $base_desc"
echo "setup:      OCF $MODE on malloc cache ${CACHE_MIB} MiB + malloc core ${CORE_MIB} MiB; nbdkit memory ${CORE_MIB}M (default threads)"
echo "pinning:    servers ${SERVER_CPUS:-any CPU}, fio ${FIO_CPUS:-any CPU}"
echo "load avg:   $(loadavg) at start (other work on the machine skews results)"
echo "runs:       working set ${WS_MIB} MiB, ${REPS} reps x ${RUNTIME}s (+${RAMP}s ramp) per row and server, alternating"
echo

# --- fio --------------------------------------------------------------------
clk_tck=$(getconf CLK_TCK)
# cpu_ticks PID: user+system CPU time of a process, all its threads.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# run_fio SERVER NAME RW BS QD -> prints "iops bw_bytes server_cpu_us_per_io"
# The server's CPU time is taken over the whole run, ramp included, and
# divided by the IOs of the whole run (IOPS times runtime plus ramp).
run_fio() {
	local srv=$1 name=$2 rw=$3 bs=$4 qd=$5 out c0 c1
	out=$work/$name.$srv.$(date +%s%N).json
	local dir=read
	case $rw in *write*) dir="write" ;; esac
	c0=$(cpu_ticks "${PID[$srv]}")
	"${fio_pin[@]}" fio --name="$name" --ioengine=nbd --uri="${URI[$srv]}" \
		--rw="$rw" --bs="$bs" --iodepth="$qd" --size="${WS_MIB}M" \
		--time_based --runtime="$RUNTIME" --ramp_time="$RAMP" \
		--norandommap --randrepeat=0 \
		--output-format=json --output="$out" >/dev/null 2>"$out.err" ||
		{ cat "$out.err" >&2; die "fio $name against $srv failed"; }
	c1=$(cpu_ticks "${PID[$srv]}")
	jq -r --arg d "$dir" --argjson cpu "$(((c1 - c0) * 1000000 / clk_tck))" --argjson secs "$((RUNTIME + RAMP))" \
		'.jobs[0][$d] | "\(.iops) \(.bw_bytes) \(if .iops > 0 then $cpu / (.iops * $secs) else 0 end)"' "$out"
}

# Fill the working set on every server, so that reads are cache hits on
# blockcache and nbdkit's sparse memory is allocated.
for srv in "${servers[@]}"; do
	fio --name=fill --ioengine=nbd --uri="${URI[$srv]}" --rw=write --bs=1M --iodepth=8 \
		--size="${WS_MIB}M" --output-format=json --output="$work/fill.$srv.json" >/dev/null 2>&1 ||
		die "fill of $srv failed"
done

rows=()
for spec in "${ROW_SPECS[@]}"; do
	IFS=: read -r name _ <<<"$spec"
	if [ -z "$ROWS" ] || [[ " $ROWS " == *" $name "* ]]; then
		rows+=("$spec")
	fi
done
[ ${#rows[@]} -gt 0 ] || die "ROWS=\"$ROWS\" matches no row"

table=$work/table
{
	printf '%-18s %9s %9s %6s %9s %9s %6s %8s %8s' row "bc IOPS" "kit IOPS" ratio "bc MB/s" "kit MB/s" ratio "bc us/IO" "kit us/IO"
	[ -z "${base_bin:-}" ] || printf ' %9s %8s %7s' "base IOPS" "base us" "bc/base"
	echo
} >"$table"
nsrv=${#servers[@]}
for spec in "${rows[@]}"; do
	IFS=: read -r name rw bs qd <<<"$spec"
	for srv in "${servers[@]}"; do
		: >"$work/$name.$srv"
	done
	for rep in $(seq "$REPS"); do
		# Rotate which server goes first, so that slow drift hits all alike.
		order=()
		for i in $(seq 0 $((nsrv - 1))); do
			order+=("${servers[$(((i + rep - 1) % nsrv))]}")
		done
		for srv in "${order[@]}"; do
			prof=
			if [ "$PROFILE" = 1 ] && [ "$srv" = blockcache ] && [ "$rep" = 1 ]; then
				curl -s -o "$work/$name.pprof" \
					"http://127.0.0.1:$pprof_port/debug/pprof/profile?seconds=$((RUNTIME + RAMP))" &
				prof=$!
			fi
			r=$(run_fio "$srv" "$name" "$rw" "$bs" "$qd")
			[ -z "$prof" ] || wait "$prof"
			echo "$r" >>"$work/$name.$srv"
			read -r iops bw cpu <<<"$r"
			printf '  %-18s rep %d %-10s %10.0f IOPS %8.1f MB/s %7.1f us CPU/IO\n' "$name" "$rep" "$srv" \
				"$iops" "$(awk -v b="$bw" 'BEGIN{print b/1e6}')" "$cpu" >&2
		done
	done
	med() { cut -d' ' -f"$2" "$work/$name.$1" | median; }
	{
		awk -v n="$name" -v bi="$(med blockcache 1)" -v ki="$(med nbdkit 1)" -v bb="$(med blockcache 2)" \
			-v kb="$(med nbdkit 2)" -v bc="$(med blockcache 3)" -v kc="$(med nbdkit 3)" 'BEGIN {
			printf "%-18s %9.0f %9.0f %6.2f %9.1f %9.1f %6.2f %8.1f %8.1f", n, bi, ki, bi/ki, bb/1e6, kb/1e6, bb/kb, bc, kc }'
		[ -z "${base_bin:-}" ] || awk -v bi="$(med blockcache 1)" -v si="$(med base 1)" -v sc="$(med base 3)" 'BEGIN {
			printf " %9.0f %8.1f %7.2f", si, sc, bi/si }'
		echo
	} >>"$table"
done

# Confirm the read rows hit the cache (JSON-RPC bdev_ocf_get_stats).
if command -v python3 >/dev/null; then
	python3 - "$work/rpc.sock" <<'EOF' || true
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "bdev_ocf_get_stats",
                      "params": {"name": "Cache0"}}).encode())
buf = b""
while True:
    chunk = s.recv(65536)
    if not chunk:
        break
    buf += chunk
    try:
        r = json.loads(buf)
        break
    except ValueError:
        pass
q = r["result"]["requests"]
rd = q["rd_total"]["count"]
print("\nblockcache OCF stats: %d reads, %.2f%% hits (%d full misses, %d partial); %d writes"
      % (rd, 100.0 * q["rd_hits"]["count"] / max(rd, 1), q["rd_full_misses"]["count"],
         q["rd_partial_misses"]["count"], q["wr_total"]["count"]))
EOF
fi

if [ "$PROFILE" = 1 ]; then
	for spec in "${rows[@]}"; do
		IFS=: read -r name _ <<<"$spec"
		echo
		echo "== CPU profile of blockcache, $name (go tool pprof -top $bc_bin $work/$name.pprof)"
		go tool pprof -top -nodecount=25 "$bc_bin" "$work/$name.pprof" 2>/dev/null | sed -n '4,32p'
	done
fi

echo
echo "load avg:   $(loadavg) at end"
echo "medians of $REPS runs; ratio = blockcache / nbdkit (>= 1.00: blockcache at least matches);"
echo "us/IO = server CPU time (all threads, user+system) per IO, lower is better"
cat "$table"
