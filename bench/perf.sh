#!/usr/bin/env bash
# bench/perf.sh: `blockcache perf` (the in-process bdevperf) on the shapes of
# issue 14, on one CPU, against SPDK bdevperf's figures and fio:
#
#   malloc-qd1    a RAM disk alone, 4 KiB random reads, QD1: the in-process
#   malloc-qd32   ceiling of the same run (and QD32)
#   ocf-qd1       an OCF write-through volume on RAM disks, every read a hit
#   ocf-qd32      (the core is smaller than the cache, warmed before measuring)
#   ocf-wb-qd32   an OCF write-back volume on RAM disks, 4 KiB random writes,
#                 QD32, every write a hit
#   file-qd32     an OCF write-through volume on a cache file and a core file
#                 (bdev_uring_create, or bdev_aio_create with BACKEND=aio,
#                 O_DIRECT), every read a hit, QD32
#   fio-qd32      fio --ioengine=io_uring --direct=1, 4 KiB random reads, QD32,
#                 on the same cache file: what the file gives one CPU
#
# Every blockcache shape runs as `GOMAXPROCS=1 blockcache perf -m MASK` (one
# CPU, pinned, one scheduler slot) with --warmup WARM seconds first, then
# RUNTIME seconds measured; fio runs under taskset on the same CPU with the
# same ramp and runtime. REPS rounds run every shape once each, the order
# rotated from round to round so that no shape always follows the same one.
# It prints the median IOPS with the spread (min-max) and the median p50 and
# p99 latency of each shape, then the targets of issue 14 with the ratios.
#
# Not part of `make test`. Needs a machine with nothing else running for the
# figures to mean anything. Run from anywhere:  bench/perf.sh
# Knobs (environment):
#   REPS=5          rounds (medians over them)
#   RUNTIME=10      seconds of each measured run
#   WARM=5          seconds of warm-up before each (not measured): random
#                   IO touches every line of the RAM-disk volumes within it
#   PREFILL=5       seconds of 128 KiB sequential reads through the file
#                   volume before the rounds, so that every line of its
#                   core is in the cache file (which keeps it across runs)
#   CPU=0           the CPU everything runs on
#   CACHE_MIB=512   RAM-disk and file cache size
#   CORE_MIB=256    RAM-disk and file core size (smaller than the cache: all
#                   hits once warm)
#   BACKEND=uring   file bdevs: uring (bdev_uring_create) or aio
#   IO_POLL=        perf's --io-poll for the uring bdevs (empty: perf's
#                   default, 1ms, polling as bdevperf's reactor does; 0
#                   sleeps while IO is in flight, as serve does by default;
#                   a base build older than the flag then fails)
#   DIR=            where the cache and core files go (default: the work
#                   directory under /tmp; it must allow O_DIRECT, not tmpfs)
#   SHAPES="..."    subset of the shapes above, by name
#   REV=commit      build that commit (git archive) instead of the working tree
#   BLOCKCACHE=path use this binary instead of building anything
#   BASE_REV=commit also run every blockcache shape with this commit's build
#   BASE_BLOCKCACHE=path  (or this binary), alternating with the one under
#                   test run by run, the order swapped from round to round:
#                   a before/after from the same minutes ("NAME@base" rows)
#   LOCK=/tmp/bench.lock  every measured run (and the prefill) holds this
#                   flock(1) lock, so that it never overlaps another
#                   benchmark that takes it; LOCK= runs without
#   KEEP=1          keep the work directory (configs, JSON results)
set -euo pipefail

REPS=${REPS:-5}
RUNTIME=${RUNTIME:-10}
WARM=${WARM:-5}
PREFILL=${PREFILL:-5}
CPU=${CPU:-0}
CACHE_MIB=${CACHE_MIB:-512}
CORE_MIB=${CORE_MIB:-256}
BACKEND=${BACKEND:-uring}
IO_POLL=${IO_POLL:-}
DIR=${DIR:-}
SHAPES=${SHAPES:-malloc-qd1 malloc-qd32 ocf-qd1 ocf-qd32 ocf-wb-qd32 file-qd32 fio-qd32}
KEEP=${KEEP:-0}
LOCK=${LOCK-/tmp/bench.lock}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$here/lib.sh"

whole_numbers REPS RUNTIME WARM PREFILL CPU CACHE_MIB CORE_MIB
at_least_one REPS RUNTIME
[ "$CORE_MIB" -lt "$CACHE_MIB" ] || die "CORE_MIB=$CORE_MIB: want less than CACHE_MIB=$CACHE_MIB, so that every IO hits"
case $BACKEND in
uring) file_method=bdev_uring_create ;;
aio) file_method=bdev_aio_create ;;
*) die "BACKEND=$BACKEND: want uring or aio" ;;
esac
for s in $SHAPES; do
	case $s in
	malloc-qd1 | malloc-qd32 | ocf-qd1 | ocf-qd32 | ocf-wb-qd32 | file-qd32 | fio-qd32) ;;
	*) die "SHAPES: unknown shape $s" ;;
	esac
done

need_tools fio:fio jq:jq taskset:util-linux flock:util-linux
work_dir perf stop_servers
binaries ./cmd/blockcache
# locked CMD...: CMD under LOCK.
locked() {
	if [ -n "$LOCK" ]; then
		flock "$LOCK" "$@"
	else
		"$@"
	fi
}
files=${DIR:-$work}
mkdir -p "$files"
mask=$(printf '0x%x' $((1 << CPU)))

# --- configs ----------------------------------------------------------------
mib_blocks() { echo $(($1 * 2048)); } # 512-byte blocks in $1 MiB
malloc_entry() {
	printf '{"method":"bdev_malloc_create","params":{"name":"%s","num_blocks":%s,"block_size":512}}' "$1" "$(mib_blocks "$2")"
}
ocf_entry() {
	printf '{"method":"bdev_ocf_create","params":{"name":"Cache1","mode":"%s","cache_bdev_name":"%s","core_bdev_name":"%s"}}' "$1" "$2" "$3"
}
config() { printf '{"subsystems":[{"subsystem":"bdev","config":[%s]}]}\n' "$(
	IFS=,
	echo "$*"
)"; }

config "$(malloc_entry Malloc0 "$CACHE_MIB")" >"$work/malloc.json"
config "$(malloc_entry Malloc0 "$CACHE_MIB")" "$(malloc_entry Malloc1 "$CORE_MIB")" \
	"$(ocf_entry wt Malloc0 Malloc1)" >"$work/ocf.json"
config "$(malloc_entry Malloc0 "$CACHE_MIB")" "$(malloc_entry Malloc1 "$CORE_MIB")" \
	"$(ocf_entry wb Malloc0 Malloc1)" >"$work/ocf-wb.json"
if [[ " $SHAPES " == *" file-qd32 "* || " $SHAPES " == *" fio-qd32 "* ]]; then
	rm -f "$files/cache.img" "$files/core.img"
	# Written blocks under both files (holes and fallocate's unwritten
	# extents read as zeroes without touching the disk): the cache's
	# misses during warm-up read the disk, and so does fio on the cache
	# file, whose reads would otherwise be served partly from holes.
	dd if=/dev/zero of="$files/cache.img" bs=1M count="$CACHE_MIB" oflag=direct status=none
	dd if=/dev/zero of="$files/core.img" bs=1M count="$CORE_MIB" oflag=direct status=none
	config "$(printf '{"method":"%s","params":{"name":"File0","filename":"%s","block_size":512}}' "$file_method" "$files/cache.img")" \
		"$(printf '{"method":"%s","params":{"name":"File1","filename":"%s","block_size":512}}' "$file_method" "$files/core.img")" \
		"$(ocf_entry wt File0 File1)" >"$work/file.json"
	if [[ " $SHAPES " == *" file-qd32 "* ]] && [ "$PREFILL" -gt 0 ]; then
		GOMAXPROCS=1 locked "$bc_bin" perf -m "$mask" -c "$work/file.json" -q 8 -o 128k -w read -t "$PREFILL" \
			>"$work/prefill.txt" 2>&1 || die "prefill of the file volume failed: $(cat "$work/prefill.txt")"
	fi
fi

# --- runs -------------------------------------------------------------------
# perf_run NAME CONFIG QD WORKLOAD [BIN]: one measured run of BIN (bc_bin);
# its JSON in $work/NAME.ROUND.json, its "iops p50 p99 hits" appended to
# $work/NAME.txt.
perf_run() {
	local name=$1 cfg=$2 qd=$3 workload=$4 bin=${5:-$bc_bin} out=$work/$1.$round.json
	local poll=()
	[ -z "$IO_POLL" ] || poll=(--io-poll "$IO_POLL")
	GOMAXPROCS=1 locked "$bin" perf -m "$mask" -c "$work/$cfg" -q "$qd" -o 4k -w "$workload" \
		-t "$RUNTIME" --warmup "$WARM" "${poll[@]}" --json >"$out" 2>"$work/$name.$round.err" ||
		die "$name: blockcache perf failed: $(cat "$work/$name.$round.err")"
	jq -r '.results[0] | "\(.iops) \(.p50_latency_us) \(.p99_latency_us) \(.extra.ocf_read_hit_pct // .extra.ocf_write_hit_pct // "-")"' \
		"$out" >>"$work/$name.txt"
}

# fio_run: fio on the cache file, same CPU, ramp and runtime.
fio_run() {
	local out=$work/fio-qd32.$round.json
	locked taskset -c "$CPU" fio --name=cachefile --filename="$files/cache.img" --ioengine=io_uring --direct=1 \
		--rw=randread --bs=4k --iodepth=32 --time_based --ramp_time="$WARM" --runtime="$RUNTIME" \
		--output-format=json >"$out" 2>"$work/fio-qd32.$round.err" ||
		die "fio failed: $(cat "$work/fio-qd32.$round.err")"
	jq -r '.jobs[0].read | "\(.iops) \(.clat_ns.percentile["50.000000"] / 1000) \(.clat_ns.percentile["99.000000"] / 1000) -"' \
		"$out" >>"$work/fio-qd32.txt"
}

# run_shape SHAPE [BIN]: one run of SHAPE, by BIN (bc_bin), whose results
# go under SHAPE@base when BIN is the base.
run_shape() {
	local bin=${2:-$bc_bin} name=$1
	[ "$bin" = "$bc_bin" ] || name=$1@base
	case $1 in
	malloc-qd1) perf_run "$name" malloc.json 1 randread "$bin" ;;
	malloc-qd32) perf_run "$name" malloc.json 32 randread "$bin" ;;
	ocf-qd1) perf_run "$name" ocf.json 1 randread "$bin" ;;
	ocf-qd32) perf_run "$name" ocf.json 32 randread "$bin" ;;
	ocf-wb-qd32) perf_run "$name" ocf-wb.json 32 randwrite "$bin" ;;
	file-qd32) perf_run "$name" file.json 32 randread "$bin" ;;
	fio-qd32) fio_run ;;
	esac
}

# run_both SHAPE: SHAPE by the binary under test and, with a base, by the
# base too, in an order that swaps from round to round.
run_both() {
	if [ -z "$base_bin" ] || [ "$1" = fio-qd32 ]; then
		run_shape "$1"
	elif [ $((round % 2)) = 1 ]; then
		run_shape "$1"
		run_shape "$1" "$base_bin"
	else
		run_shape "$1" "$base_bin"
		run_shape "$1"
	fi
}

echo "bench/perf.sh: blockcache perf on one CPU ($CPU, -m $mask, GOMAXPROCS=1), 4 KiB IOs"
machine_lines
echo "blockcache: $bc_desc"
[ -z "$base_bin" ] || echo "base:       $base_desc (rows NAME@base)"
echo "runs:       REPS=$REPS RUNTIME=${RUNTIME}s WARM=${WARM}s PREFILL=${PREFILL}s CACHE_MIB=$CACHE_MIB CORE_MIB=$CORE_MIB BACKEND=$BACKEND IO_POLL=${IO_POLL:-default} files in $files"
echo "load:       $(loadavg) before"

read -r -a shapes <<<"$SHAPES"
for round in $(seq "$REPS"); do
	n=${#shapes[@]}
	for i in $(seq 0 $((n - 1))); do
		run_both "${shapes[$(((i + round - 1) % n))]}"
	done
	echo "round $round/$REPS done (load $(loadavg))"
done
echo "load:       $(loadavg) after"

# --- report -----------------------------------------------------------------
# col N SHAPE: column N (1 IOPS, 2 p50, 3 p99, 4 the cache volume's hit
# percentage, reads or else writes, "-" for none) of SHAPE's runs.
col() { awk -v c="$1" '{print $c}' "$work/$2.txt"; }
med() { col "$1" "$2" | median; }
iops_range() { col 1 "$1" | sort -g | awk 'NR==1{lo=$1} {hi=$1} END{printf "%.0fk-%.0fk", lo/1000, hi/1000}'; }
# hits SHAPE: the lowest hit percentage of SHAPE's runs, or "-".
hits() { col 4 "$1" | sort -g | awk 'NR==1{v=$1} END{if (v=="-" || v=="") print "-"; else printf "%.2f%%", v}'; }
kiops() { awk -v v="$1" 'BEGIN{printf "%.0fk", v/1000}'; }

declare -A spdk=([malloc-qd1]="1.8M" [malloc-qd32]="2.0M" [ocf-qd1]="560k" [ocf-qd32]="590-650k" [ocf-wb-qd32]="575k" [file-qd32]="" [fio-qd32]="")
echo
printf '%-17s %10s %-16s %9s %9s %9s %10s\n' shape IOPS "spread" "p50 us" "p99 us" "min hits" "SPDK 1 CPU"
rows=()
for s in "${shapes[@]}"; do
	rows+=("$s")
	[ -z "$base_bin" ] || [ "$s" = fio-qd32 ] || rows+=("$s@base")
done
for s in "${rows[@]}"; do
	printf '%-17s %10s %-16s %9.2f %9.2f %9s %10s\n' "$s" "$(kiops "$(med 1 "$s")")" "($(iops_range "$s"))" \
		"$(med 2 "$s")" "$(med 3 "$s")" "$(hits "$s")" "${spdk[${s%@base}]}"
done

# target NAME SHAPE WANT: SHAPE's median IOPS against WANT IOPS.
target() {
	[ -s "$work/$2.txt" ] || return 0
	local got
	got=$(med 1 "$2")
	awk -v n="$1" -v g="$got" -v w="$3" 'BEGIN{printf "%-40s %8.0fk  >= %6.0fk  %5.2fx  %s\n", n, g/1000, w/1000, g/w, (g>=w ? "met" : "MISSED")}'
}
echo
# targets SUFFIX: the targets for the rows of SUFFIX ("" or "@base").
targets() {
	local b=$1
	target "OCF read hits QD1 (1.5x SPDK)$b" "ocf-qd1$b" 850000
	target "OCF read hits QD32 (1.5x SPDK)$b" "ocf-qd32$b" 975000
	target "OCF wb write hits QD32 (1.0x SPDK)$b" "ocf-wb-qd32$b" 575000
	if [ -s "$work/file-qd32$b.txt" ] && [ -s "$work/fio-qd32.txt" ]; then
		target "file cache hits QD32 (0.9x fio)$b" "file-qd32$b" "$(awk -v f="$(med 1 fio-qd32)" 'BEGIN{print 0.9*f}')"
	fi
	if [ -s "$work/malloc-qd1$b.txt" ] && [ -s "$work/ocf-qd1$b.txt" ]; then
		awk -v o="$(med 1 "ocf-qd1$b")" -v m="$(med 1 "malloc-qd1$b")" -v b="$b" 'BEGIN{printf "OCF QD1 hits / malloc QD1 (ceiling)%s: %.2f\n", b, o/m}'
	fi
	if [ -s "$work/file-qd32$b.txt" ] && [ -s "$work/fio-qd32.txt" ]; then
		awk -v f="$(med 1 "file-qd32$b")" -v g="$(med 1 fio-qd32)" -v b="$b" 'BEGIN{printf "file cache hits QD32 / fio io_uring direct QD32%s: %.2f\n", b, f/g}'
	fi
}
echo "targets (issue 14), medians:"
targets ""
if [ -n "$base_bin" ]; then
	echo
	echo "the base, same rounds:"
	targets @base
fi
