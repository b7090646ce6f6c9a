# shellcheck shell=bash
# bench/lib.sh: what the benchmark scripts (nbd.sh, perf.sh, remote.sh,
# slowcore.sh, wbpressure.sh) share. Sourced, not run: each script sets its
# own knobs (KEEP, REV, BLOCKCACHE, BASE_REV, BASE_BLOCKCACHE, SERVER_CPUS,
# FIO_CPUS among them) and then sources it with  . "$here/lib.sh"

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# die MESSAGE: print "SCRIPT: MESSAGE" on stderr and exit 1.
die() {
	echo "${0##*/}: $*" >&2
	exit 1
}

# --- knobs ------------------------------------------------------------------
# whole_numbers VAR...: die unless each variable holds a whole number.
whole_numbers() {
	local v
	for v in "$@"; do
		[[ "${!v}" =~ ^[0-9]+$ ]] || die "$v=${!v}: want a whole number"
	done
}

# at_least_one VAR...: die unless each variable (a whole number) is 1 or
# more.
at_least_one() {
	local v
	for v in "$@"; do
		[ "${!v}" -ge 1 ] || die "$v=${!v}: want at least 1"
	done
}

# delay_in_ms: die unless DELAY_US is a whole number of milliseconds, as
# nbdkit's delay filter takes them.
delay_in_ms() {
	if ! [[ "$DELAY_US" =~ ^[0-9]+$ ]] || [ $((DELAY_US % 1000)) != 0 ]; then
		die "DELAY_US=$DELAY_US: want a multiple of 1000 (nbdkit's delay filter takes milliseconds)"
	fi
}

# pick_servers NAME...: servers, the NAMEs that SERVERS names (all of them
# when SERVERS is empty), in order; die when it names none of them.
pick_servers() {
	local s
	servers=()
	for s in "$@"; do
		if [ -z "${SERVERS:-}" ] || [[ " $SERVERS " == *" $s "* ]]; then
			servers+=("$s")
		fi
	done
	[ ${#servers[@]} -gt 0 ] || die "SERVERS=\"${SERVERS:-}\" matches none of: $*"
}

# have NAME: whether NAME is one of servers.
have() { [[ " ${servers[*]} " == *" $1 "* ]]; }

# --- dependencies ---------------------------------------------------------
# need_tools CMD:PKG...: install with apt-get (through sudo unless root) the
# Debian package PKG of each command CMD that is not on PATH.
need_tools() {
	local t sudo="" need_pkgs=()
	for t in "$@"; do
		command -v "${t%%:*}" >/dev/null || need_pkgs+=("${t#*:}")
	done
	[ ${#need_pkgs[@]} -gt 0 ] || return 0
	echo "installing: ${need_pkgs[*]}"
	[ "$(id -u)" = 0 ] || sudo=sudo
	$sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}"
}

# need_fio_nbd: die unless fio has its nbd ioengine.
need_fio_nbd() {
	fio --enghelp 2>/dev/null | grep -qw nbd || die "this fio has no nbd ioengine (it needs libnbd); install a fio built with it"
}

# --- work directory -------------------------------------------------------
# pids: the servers that stop_servers stops.
pids=()
# stop_servers: kill the servers in pids, wait for them and empty pids.
stop_servers() {
	local p
	for p in "${pids[@]}"; do
		kill "$p" 2>/dev/null || true
	done
	for p in "${pids[@]}"; do
		wait "$p" 2>/dev/null || true
	done
	pids=()
}

# work_dir NAME STOP: make the work directory $work, /tmp/blockcache-NAME.*;
# on exit, run the function STOP (it stops the servers), then remove $work,
# or with KEEP=1 say where it is kept.
work_dir() {
	work=$(mktemp -d "/tmp/blockcache-$1.XXXXXX")
	stop_fn=$2
	trap cleanup EXIT
	trap 'exit 130' INT TERM
}

# cleanup: the EXIT trap of work_dir.
cleanup() {
	"$stop_fn"
	if [ "$KEEP" = 1 ]; then
		echo "work directory kept: $work"
	else
		rm -rf "$work"
	fi
}

# --- blockcache binaries ----------------------------------------------------
# build OUT PKG REV [sum]: build PKG of commit REV (git archive), or of the
# working tree if REV is empty, into OUT (in the work directory, so that a
# parallel `make build` cannot swap the binary under the benchmark); prints
# where it came from. With "sum", a changed working tree also shows the
# sha256 of its diff, which tells two runs of different changes apart.
build() {
	local out=$1 pkg=$2 rev=$3 sum=${4:-} src diff=
	if [ -n "$rev" ]; then
		src=$work/src.$(basename "$out")
		mkdir "$src"
		(cd "$repo" && git archive "$rev") | tar -x -C "$src" || die "git archive $rev failed"
		(cd "$src" && go build -o "$out" "$pkg") || die "go build of $rev failed"
		echo "commit $(cd "$repo" && git rev-parse --short "$rev")"
	else
		(cd "$repo" && go build -o "$out" "$pkg") ||
			die "go build of the working tree failed (REV=HEAD builds the last commit)"
		[ -z "$sum" ] || diff=" (diff sha256 $(cd "$repo" && git diff HEAD -- . 2>/dev/null | sha256sum | cut -c1-12))"
		echo "working tree at $(cd "$repo" && git rev-parse --short HEAD)$(cd "$repo" && git diff --quiet HEAD -- . 2>/dev/null || echo "+changes$diff")"
	fi
}

# binaries PKG [sum]: the blockcache under test, bc_bin and bc_desc (the
# BLOCKCACHE binary, or PKG built from REV or the working tree), and the
# base, base_bin and base_desc (the BASE_BLOCKCACHE binary, or
# ./cmd/blockcache built from BASE_REV; base_bin empty without either).
# "sum" as for build.
# shellcheck disable=SC2034 # bc_desc and base_desc are the scripts' to print
binaries() {
	local pkg=$1 sum=${2:-}
	if [ -n "${BLOCKCACHE:-}" ]; then
		bc_bin=$BLOCKCACHE
		bc_desc="binary $BLOCKCACHE"
	else
		bc_bin=$work/blockcache
		bc_desc=$(build "$bc_bin" "$pkg" "${REV:-}" "$sum")
	fi
	base_bin=
	if [ -n "${BASE_BLOCKCACHE:-}" ]; then
		base_bin=$BASE_BLOCKCACHE
		base_desc="binary $BASE_BLOCKCACHE"
	elif [ -n "${BASE_REV:-}" ]; then
		base_bin=$work/base
		base_desc=$(build "$base_bin" ./cmd/blockcache "$BASE_REV" "$sum")
	fi
}

# --- servers ----------------------------------------------------------------
# pinning: server_pin and fio_pin, the taskset commands that pin to
# SERVER_CPUS and FIO_CPUS (empty when those are).
# shellcheck disable=SC2034 # server_pin and fio_pin are the scripts' to use
pinning() {
	server_pin=()
	fio_pin=()
	[ -z "${SERVER_CPUS:-}" ] || server_pin=(taskset -c "$SERVER_CPUS")
	[ -z "${FIO_CPUS:-}" ] || fio_pin=(taskset -c "$FIO_CPUS")
}

# wait_nbd URI TRIES [PID]: wait up to TRIES times 0.1 s for an NBD server to
# answer at URI; with PID, give up as soon as that process is gone. Returns 1
# if the server did not come up.
wait_nbd() {
	local uri=$1 tries=$2 pid=${3:-}
	for _ in $(seq "$tries"); do
		if nbdinfo --size "$uri" >/dev/null 2>&1; then
			return 0
		fi
		[ -z "$pid" ] || kill -0 "$pid" 2>/dev/null || return 1
		sleep 0.1
	done
	return 1
}

# --- report -------------------------------------------------------------------
# machine_lines [EXTRA]: the header's date: and host: lines, EXTRA appended
# to host:.
# shellcheck disable=SC2120 # EXTRA is optional
machine_lines() {
	echo "date:       $(date -u +%Y-%m-%dT%H:%M:%SZ)"
	echo "host:       $(uname -srm), nproc $(nproc), $(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ //')${1:+, $1}"
}

# loadavg: the 1, 5 and 15 minute load averages.
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

# median: the median of the numbers on stdin, one a line.
median() { sort -g | awk '{v[NR]=$1} END {if (NR%2) print v[(NR+1)/2]; else print (v[NR/2]+v[NR/2+1])/2}'; }

# read_stats SERVER -> prints "read_hits reads miss_seconds misses" of the
# volume Cache0 on the blockcache server SERVER ($bc_bin, its socket in
# ${RPC[SERVER]}): the counts of bdev_ocf_get_stats, then the sum and count
# of the volume's read_miss latency histogram (blockcache_get_metrics).
read_stats() {
	local counts miss
	counts=$("$bc_bin" rpc bdev_ocf_get_stats '{"name":"Cache0"}' -s "${RPC[$1]}" |
		jq -r '.requests | "\(.rd_hits.count) \(.rd_total.count)"') ||
		die "bdev_ocf_get_stats on $1 failed"
	miss=$("$bc_bin" rpc blockcache_get_metrics -s "${RPC[$1]}" |
		jq -r '.volumes[] | select(.name == "Cache0") | .latency.read_miss | "\(.sum_seconds) \(.counts | add)"') ||
		die "blockcache_get_metrics on $1 failed"
	echo "$counts ${miss:-0 0}"
}

# spread FILE COLUMN FORMAT -> "median [min-max]" of that column, in FORMAT.
spread() {
	local m lo hi
	m=$(cut -d' ' -f"$2" "$1" | median)
	lo=$(cut -d' ' -f"$2" "$1" | sort -g | head -1)
	hi=$(cut -d' ' -f"$2" "$1" | sort -g | tail -1)
	awk -v m="$m" -v lo="$lo" -v hi="$hi" -v f="$3" 'BEGIN { printf f " [" f "-" f "]", m, lo, hi }'
}

# measure_run GROUP SERVER REP [LAT]: one measured run of SERVER through the
# script's run_fio (run_fio SERVER GROUP SECONDS TAG -> "iops p50_us
# p99_us"), with Cache0's read hits and read-miss latency read before and
# after when SERVER is a blockcache (it has a socket in RPC). It appends
# "iops p50_us p99_us read_hits reads miss_us" to $work/GROUP.SERVER
# (miss_us: the volume's mean read-miss time over the run, 0 when none or
# not a blockcache), so that line N is round N when every server runs once
# a round, and prints a progress line to stderr, the latencies labelled LAT
# (e.g. "rd ").
measure_run() {
	local grp=$1 srv=$2 rep=$3 lat=${4:-} s0="0 0 0 0" s1="0 0 0 0" r h0 t0 m0 n0 h1 t1 m1 n1 iops p50 p99 hit=- miss
	[ -z "${RPC[$srv]:-}" ] || s0=$(read_stats "$srv")
	r=$(run_fio "$srv" "$grp" "$RUNTIME" "rep$rep")
	[ -z "${RPC[$srv]:-}" ] || s1=$(read_stats "$srv")
	read -r h0 t0 m0 n0 <<<"$s0"
	read -r h1 t1 m1 n1 <<<"$s1"
	miss=$(awk -v m0="$m0" -v m1="$m1" -v n=$((n1 - n0)) 'BEGIN { printf "%.0f", n ? 1e6 * (m1 - m0) / n : 0 }')
	echo "$r $((h1 - h0)) $((t1 - t0)) $miss" >>"$work/$grp.$srv"
	read -r iops p50 p99 <<<"$r"
	[ -z "${RPC[$srv]:-}" ] || hit="$(awk -v h=$((h1 - h0)) -v t=$((t1 - t0)) 'BEGIN { printf "%.2f%%", t ? 100 * h / t : 0 }')  miss ${miss} us"
	printf '  %-5s rep %d %-14s %8.0f IOPS  %sp50 %7.0f us  %sp99 %7.0f us  hits %s\n' \
		"$grp" "$rep" "$srv" "$iops" "$lat" "$p50" "$lat" "$p99" "$hit" >&2
}
