#!/usr/bin/env bash
# test/ceph/run.sh: blockcache in write-back mode in front of a Ceph RBD
# image, end to end, with real processes only:
#
#   Ceph         one monitor and one memstore OSD on 127.0.0.1 (cluster.sh)
#   qemu-nbd     serves the RBD image rbd/core on a Unix socket (its rbd
#                driver, from qemu-block-extra)
#   blockcache   serve --bare: a malloc cache in front of the NBD client bdev
#                on qemu-nbd, the OCF volume Vol0 in wb, exported over NBD
#
# Steps: data written through blockcache is held by the cache (not yet on
# RBD), a cache flush delivers it (read back with rbd export, a path that
# bypasses blockcache and qemu-nbd); qemu-nbd is stopped (SIGTERM) and
# started again while a writer keeps writing, and the cache acknowledges
# the writes meanwhile; qemu-nbd is killed (SIGKILL) in the middle of a
# flush and started again, and the flush completes; the image read back with
# rbd export, and the volume through blockcache, equal a model of every
# write.
#
# `make test` runs it through test/e2e/ceph_test.go (about 30 s once the
# packages are installed). Run by hand:  test/ceph/run.sh
# Knobs (environment):
#   BLOCKCACHE=path  the blockcache binary (default: build the working tree)
#   KEEP=1           keep the work directory (logs, images) at the end
#   QEMU_CACHE=mode  qemu-nbd's --cache (default none; writeback keeps
#                    acknowledged writes in librbd's memory until a flush)
# Needs root, or sudo, to install missing Debian packages with apt-get.
set -euo pipefail

KEEP=${KEEP:-0}
QEMU_CACHE=${QEMU_CACHE:-none}
CORE_MIB=256   # the RBD image
CACHE_MIB=128  # the malloc cache
OUTAGE_S=3     # how long qemu-nbd is away

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source-path=SCRIPTDIR source=cluster.sh
. "$here/cluster.sh"

started=$SECONDS
current="setup"

# step NAME: the step that a failure names.
step() {
	current=$1
	echo "== [$((SECONDS - started))s] $current"
}

# fail MESSAGE: say which step failed and why, with the tails of the logs,
# and exit 1 (the EXIT trap tears everything down).
fail() {
	local f
	{
		echo "ceph test: FAILED at step \"$current\": $*"
		for f in "${work:-/nonexistent}"/*.log; do
			[ -s "$f" ] || continue
			echo "--- tail of $(basename "$f")"
			tail -n 20 "$f"
		done
		ceph_logs
	} >&2
	exit 1
}

# --- work directory and teardown ----------------------------------------------
work=$(mktemp -d /tmp/bcceph.XXXXXX)
bc_pid=''
qnbd_pid=''
load_pid=''
flush_pid=''
teardown() {
	local rc=$?
	[ -z "$load_pid" ] || kill "$load_pid" 2>/dev/null || true
	[ -z "$flush_pid" ] || kill "$flush_pid" 2>/dev/null || true
	if [ -n "$bc_pid" ]; then
		# With the core gone a shutdown flush could wait: SIGKILL after 10 s.
		kill "$bc_pid" 2>/dev/null || true
		for _ in $(seq 100); do kill -0 "$bc_pid" 2>/dev/null || break; sleep 0.1; done
		kill -9 "$bc_pid" 2>/dev/null || true
	fi
	if [ -n "$qnbd_pid" ]; then
		kill "$qnbd_pid" 2>/dev/null || true
		wait "$qnbd_pid" 2>/dev/null || true
	fi
	[ -z "$load_pid" ] || wait "$load_pid" 2>/dev/null || true
	[ -z "$flush_pid" ] || wait "$flush_pid" 2>/dev/null || true
	[ -z "$bc_pid" ] || wait "$bc_pid" 2>/dev/null || true
	ceph_stop
	if [ "$KEEP" = 1 ]; then
		echo "work directory kept: $work"
	else
		rm -rf "$work"
	fi
	exit "$rc"
}
trap teardown EXIT
trap 'exit 130' INT TERM

# --- packages -----------------------------------------------------------------
step "install packages"
pkgs=()
for p in ceph-mon ceph-osd ceph-common qemu-block-extra qemu-utils libnbd-bin python3-libnbd jq; do
	dpkg -s "$p" >/dev/null 2>&1 || pkgs+=("$p")
done
if [ ${#pkgs[@]} -gt 0 ]; then
	echo "installing: ${pkgs[*]}"
	sudo=
	[ "$(id -u)" = 0 ] || sudo=sudo
	# Another apt-get (a parallel test, make deps) may hold dpkg's lock.
	{ $sudo apt-get -o DPkg::Lock::Timeout=300 update -qq &&
		DEBIAN_FRONTEND=noninteractive $sudo apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "${pkgs[@]}"; } \
		>"$work/apt.log" 2>&1 || fail "apt-get install ${pkgs[*]} failed"
fi

if [ -z "${BLOCKCACHE:-}" ]; then
	step "build blockcache"
	(cd "$repo" && go build -o "$work/blockcache" ./cmd/blockcache) || fail "go build ./cmd/blockcache failed"
	BLOCKCACHE=$work/blockcache
fi
export BLOCKCACHE_RPC_SOCKET=$work/rpc.sock
bc() { "$BLOCKCACHE" "$@"; }
# bcx ARGS...: blockcache ARGS, its output printed; a failure fails the step
# with that output.
bcx() {
	local out
	out=$(bc "$@" 2>&1) || fail "blockcache $* failed: $out"
	echo "$out" >>"$work/cli.log"
	printf '%s\n' "$out"
}

# --- Ceph ---------------------------------------------------------------------
step "start the Ceph cluster"
ceph_start "$work/ceph"
step "create the RBD image rbd/core (${CORE_MIB} MiB)"
# Without the exclusive-lock feature (and those that need it): a qemu-nbd
# killed with SIGKILL would leave the lock to a new one only once librbd
# found the owner dead, some 30 s later.
rbd create --image-feature layering --size "${CORE_MIB}M" rbd/core >"$work/rbd.log" 2>&1 || fail "rbd create failed"

# rbd_export FILE: the whole image, read by librbd directly.
rbd_export() {
	rm -f "$1"
	rbd export --no-progress rbd/core "$1" >>"$work/rbd.log" 2>&1 || fail "rbd export rbd/core failed"
}

# --- qemu-nbd -------------------------------------------------------------------
rbd_sock=$work/rbd.sock
rbd_uri="nbd+unix:///?socket=$rbd_sock"
# start_qemu_nbd: serve rbd/core, persistent (-t) and to several clients at
# once, with librbd's cache off (--cache=none): a write qemu-nbd answers is
# in RADOS, so a qemu-nbd killed outright loses nothing it acknowledged.
start_qemu_nbd() {
	rm -f "$rbd_sock"
	qemu-nbd -t --shared=16 -f raw --cache="$QEMU_CACHE" --socket="$rbd_sock" \
		"rbd:rbd/core:conf=$CEPH_CONF" >>"$work/qemu-nbd.log" 2>&1 &
	qnbd_pid=$!
	for _ in $(seq 300); do
		nbdinfo --size "$rbd_uri" >/dev/null 2>&1 && return 0
		kill -0 "$qnbd_pid" 2>/dev/null || fail "qemu-nbd exited at start"
		sleep 0.1
	done
	fail "qemu-nbd did not answer on $rbd_sock within 30 s"
}
# stop_qemu_nbd SIGNAL: TERM, as a service manager stops it (qemu-nbd drops
# its connections, requests in flight included, and closes the image), or
# KILL, as a crash.
stop_qemu_nbd() {
	kill -"$1" "$qnbd_pid"
	wait "$qnbd_pid" 2>/dev/null || true
	qnbd_pid=
}
step "serve rbd/core with qemu-nbd"
start_qemu_nbd

# --- blockcache -----------------------------------------------------------------
step "start blockcache"
"$BLOCKCACHE" serve --bare -r "$work/rpc.sock" --nbd-listen "" --nbd-socket "$work/bc.sock" \
	--data-dir "$work/data" >"$work/blockcache.log" 2>&1 &
bc_pid=$!
for _ in $(seq 300); do
	bc version --daemon >/dev/null 2>&1 && break
	kill -0 "$bc_pid" 2>/dev/null || fail "blockcache exited at start"
	sleep 0.1
done
bc version --daemon >/dev/null 2>&1 || fail "blockcache did not answer on $work/rpc.sock within 30 s"

step "create the cache (malloc ${CACHE_MIB} MiB) in front of the NBD client bdev Rbd0, wb"
bcx rpc bdev_malloc_create "{\"name\":\"Malloc0\",\"num_blocks\":$((CACHE_MIB * 2048)),\"block_size\":512}" >/dev/null
bcx bdev create-nbd Rbd0 "$rbd_uri" >/dev/null
size=$(bc rpc bdev_get_bdevs '{"name":"Rbd0"}' | jq '.[0].num_blocks * .[0].block_size') ||
	fail "bdev_get_bdevs Rbd0 failed"
[ "$size" = $((CORE_MIB << 20)) ] || fail "Rbd0 has $size bytes, the RBD image $((CORE_MIB << 20))"
bcx cache create Vol0 --mode wb --cache Malloc0 --core Rbd0 >/dev/null
# Large sequential writes would otherwise bypass the cache (OCF's cutoff).
bcx cache set-seqcutoff Vol0 --policy never >/dev/null
vol_uri=$(bcx export start Vol0)

# The model: every write acknowledged through Vol0, applied to a plain file.
model=$work/model.img
truncate -s "${CORE_MIB}M" "$model"

# --- write, flush, read back ----------------------------------------------------
step "write 32 MiB through blockcache"
head -c $((32 << 20)) /dev/urandom >"$work/p1"
nbdcopy "$work/p1" "$vol_uri" >"$work/nbdcopy.log" 2>&1 || fail "nbdcopy to $vol_uri failed: $(tail -3 "$work/nbdcopy.log")"
dd if="$work/p1" of="$model" conv=notrunc status=none

step "check the cache holds it (RBD does not have it yet)"
rbd_export "$work/before.img"
if cmp -s -n $((32 << 20)) "$work/p1" "$work/before.img"; then
	fail "the RBD image already holds the data before any cache flush: wb did not keep it in the cache"
fi

step "flush the cache, read RBD back with rbd export"
bcx cache flush Vol0 >/dev/null
rbd_export "$work/after.img"
cmp "$model" "$work/after.img" >"$work/cmp.log" 2>&1 ||
	fail "after the flush the RBD image differs from what was written: $(cat "$work/cmp.log")"

# --- qemu-nbd restarted under load -------------------------------------------------
# The writer (writer.py): 1 MiB writes at random places of [64, 128) MiB,
# one at a time on one connection, never a flush, each acknowledged write
# logged with its time.
: >"$work/writes"
rm -f "$work/stop"

step "stop qemu-nbd (SIGTERM) and start it again while a writer writes through blockcache"
/usr/bin/python3 "$here/writer.py" write "$vol_uri" "$work/writes" "$work/stop" >"$work/writer.log" 2>&1 &
load_pid=$!
sleep 1
down=$(date +%s%3N)
stop_qemu_nbd TERM
sleep "$OUTAGE_S"
up=$(date +%s%3N)
start_qemu_nbd
sleep 1
touch "$work/stop"
wait "$load_pid" || fail "the writer failed: $(tail -3 "$work/writer.log")"
load_pid=''
# Writes acknowledged from half a second after qemu-nbd stopped until it was
# started again: the cache took them without its core.
during=$(awk -v d="$down" -v u="$up" '$1 > d + 500 && $1 < u { n++ } END { print n + 0 }' "$work/writes")
total=$(wc -l <"$work/writes")
echo "writer: $total writes of 1 MiB acknowledged, $during of them while qemu-nbd was away"
[ "$during" -ge 1 ] || fail "no write was acknowledged while qemu-nbd was away ($total in all): wb should take writes without its core"
/usr/bin/python3 "$here/writer.py" apply "$work/writes" "$model" || fail "applying the writes to the model failed"
dirty=$(bc rpc bdev_ocf_get_stats '{"name":"Vol0"}' | jq '.usage.dirty.count') || fail "bdev_ocf_get_stats Vol0 failed"
echo "dirty lines before the flush: $dirty"

step "kill qemu-nbd (SIGKILL) while a flush writes back, start it again"
# The flush's write-backs are in flight when qemu-nbd dies and its
# connection drops: their outcome is unknown, and the NBD client sends them
# again; the rest wait for qemu-nbd to come back.
"$BLOCKCACHE" cache flush Vol0 >"$work/flush.log" 2>&1 &
flush_pid=$!
sleep 0.2
kill -0 "$flush_pid" 2>/dev/null ||
	fail "the flush of $dirty dirty lines ended before qemu-nbd was stopped: nothing was in flight"
stop_qemu_nbd KILL
sleep "$OUTAGE_S"
up=$(date +%s%3N)
start_qemu_nbd
for _ in $(seq 600); do
	kill -0 "$flush_pid" 2>/dev/null || break
	sleep 0.1
done
kill -0 "$flush_pid" 2>/dev/null &&
	fail "the flush under way when qemu-nbd was killed is still running 60 s after it came back"
wait "$flush_pid" || fail "the flush under way when qemu-nbd was killed failed: $(tail -3 "$work/flush.log")"
flush_pid=''
echo "the flush finished $(($(date +%s%3N) - up)) ms after qemu-nbd came back: $(tail -1 "$work/flush.log")"

step "read RBD back with rbd export"
rbd_export "$work/after2.img"
cmp "$model" "$work/after2.img" >"$work/cmp.log" 2>&1 ||
	fail "after the restarts and the flush the RBD image differs from the writes: $(cat "$work/cmp.log")"

step "read back through blockcache"
rm -f "$work/via-cache.img"
nbdcopy "$vol_uri" "$work/via-cache.img" >"$work/nbdcopy.log" 2>&1 || fail "nbdcopy from $vol_uri failed: $(tail -3 "$work/nbdcopy.log")"
cmp "$model" "$work/via-cache.img" >"$work/cmp.log" 2>&1 ||
	fail "the volume read through blockcache differs from the writes: $(cat "$work/cmp.log")"

step "tear down the volume"
bcx cache delete Vol0 >/dev/null
bcx bdev delete-nbd Rbd0 >/dev/null
echo "ceph test: passed in $((SECONDS - started)) s"
