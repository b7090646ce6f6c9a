# shellcheck shell=bash
# test/ceph/cluster.sh: a one-node Ceph cluster for tests, from Debian's
# packages, with no systemd and nothing outside its directory. Sourced, not
# run. One monitor and one OSD keep their state in memory (the OSD's object
# store is memstore), listen on 127.0.0.1 only, and require no
# authentication; pools have a single replica. No manager runs: RBD and the
# pool commands below do not need one.
#
#   ceph_start DIR   start the cluster in DIR (empty or new): writes
#                    DIR/ceph.conf, exports CEPH_CONF, waits until RADOS
#                    takes writes (about 10 s)
#   ceph_stop        stop its daemons (safe to call twice or before start)
#   ceph_logs        the tails of the daemons' logs, for failure messages
#
# Needs: ceph-mon, ceph-osd, ceph-common (the ceph, rbd and monmaptool
# commands). Uses the step and fail functions of the script sourcing it
# when defined, else prints to stderr.

ceph_pids=()
ceph_dir=

# ceph_free_port: a TCP port nothing on 127.0.0.1 listens on, from the
# dynamic range.
ceph_free_port() {
	local port used
	used=$(ss -Htln 2>/dev/null | awk '{ print $4 }')
	for _ in $(seq 50); do
		port=$((20000 + RANDOM % 30000))
		grep -q ":$port\$" <<<"$used" || { echo "$port"; return 0; }
	done
	return 1
}

# ceph_conf DIR FSID PORT: the ceph.conf of the cluster in DIR.
ceph_conf() {
	local dir=$1 fsid=$2 port=$3
	cat <<C
[global]
fsid = $fsid
mon host = v2:127.0.0.1:$port
public addr = 127.0.0.1
ms bind ipv6 = false
ms bind msgr1 = false
auth cluster required = none
auth service required = none
auth client required = none
auth supported = none
keyring = /dev/null
osd objectstore = memstore
memstore device bytes = 1073741824
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
mon data avail warn = 1
mon data avail crit = 0
run dir = $dir/run
pid file = $dir/run/\$name.pid
mon data = $dir/mon.\$id
osd data = $dir/osd.\$id
log file = $dir/log/\$name.log
mon cluster log file = default=$dir/log/mon.\$channel.log cluster=$dir/log/mon.cluster.log

[mon]
admin socket = $dir/run/\$name.asok

[osd]
admin socket = $dir/run/\$name.asok

[client]
admin socket =
log file = $dir/log/client.log
C
}

# ceph_msg TEXT: report a failure through the sourcing script's fail (which
# shows the logs), or on stderr with the tails of the daemons' logs.
ceph_msg() {
	if declare -F fail >/dev/null; then
		fail "$*"
	fi
	{
		echo "ceph: $*"
		ceph_logs
	} >&2
	return 1
}

ceph_start() {
	local dir=$1 fsid osd_uuid port
	ceph_dir=$dir
	mkdir -p "$dir/run" "$dir/log" "$dir/mon.a" "$dir/osd.0"
	fsid=$(cat /proc/sys/kernel/random/uuid)
	osd_uuid=$(cat /proc/sys/kernel/random/uuid)
	port=$(ceph_free_port) || { ceph_msg "no free TCP port for the monitor"; return 1; }
	ceph_conf "$dir" "$fsid" "$port" >"$dir/ceph.conf"
	export CEPH_CONF=$dir/ceph.conf

	monmaptool --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$port]" "$dir/monmap" >"$dir/log/monmaptool.out" 2>&1 ||
		{ ceph_msg "monmaptool --create failed: $(tail -5 "$dir/log/monmaptool.out")"; return 1; }
	ceph-mon --mkfs -i a --monmap "$dir/monmap" >"$dir/log/mon.mkfs.out" 2>&1 ||
		{ ceph_msg "ceph-mon --mkfs failed: $(tail -5 "$dir/log/mon.mkfs.out")"; return 1; }
	ceph-mon -f -i a >"$dir/log/mon.out" 2>&1 &
	ceph_pids+=($!)
	# ceph osd new registers the OSD once the monitor has a quorum (itself).
	timeout 30 ceph osd new "$osd_uuid" 0 >"$dir/log/osd.new.out" 2>&1 ||
		{ ceph_msg "the monitor on 127.0.0.1:$port did not register the OSD (ceph osd new): $(tail -5 "$dir/log/osd.new.out")"; return 1; }
	ceph-osd --mkfs -i 0 --osd-uuid "$osd_uuid" >"$dir/log/osd.mkfs.out" 2>&1 ||
		{ ceph_msg "ceph-osd --mkfs failed: $(tail -5 "$dir/log/osd.mkfs.out")"; return 1; }
	ceph-osd -f -i 0 >"$dir/log/osd.out" 2>&1 &
	ceph_pids+=($!)
	# rados put waits until the OSD is up and the pool's placement groups
	# are active: then the cluster takes writes.
	if ! { timeout 30 ceph osd pool create rbd 8 && timeout 30 rbd pool init rbd &&
		echo probe | timeout 30 rados -p rbd put probe -; } >"$dir/log/pool.out" 2>&1; then
		ceph_msg "the pool rbd did not come up: $(tail -5 "$dir/log/pool.out")"
		return 1
	fi
	timeout 10 rados -p rbd rm probe >/dev/null 2>&1 || true
}

ceph_stop() {
	local p
	for p in "${ceph_pids[@]}"; do
		kill "$p" 2>/dev/null || true
	done
	for p in "${ceph_pids[@]}"; do
		wait "$p" 2>/dev/null || true
	done
	ceph_pids=()
}

ceph_logs() {
	local f
	[ -n "$ceph_dir" ] || return 0
	for f in "$ceph_dir/log/mon.a.log" "$ceph_dir/log/osd.0.log" "$ceph_dir/log/mon.out" "$ceph_dir/log/osd.out"; do
		[ -s "$f" ] || continue
		echo "--- tail of $f"
		tail -n 15 "$f"
	done
}
