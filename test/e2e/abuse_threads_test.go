package e2e

import (
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"

	"blockcache/internal/testutil"
)

// Many NBD clients with deep queues of reads on a file bdev whose disk is
// slow (the daemon's reads throttled to 500 per second by its block IO
// cgroup, so that each read waits long in the kernel): the daemon's
// threads stay bounded by the device's queue depth (128), because reads
// beyond it wait as goroutines rather than as threads blocked in the
// kernel. Unbounded, 80 connections x 128 reads ended a daemon with "fatal
// error: thread exhaustion".
func TestAbuseThreadsOnASlowFile(t *testing.T) {
	threads := slowFileReadStorm(t, "slow-file-reads", 256<<20, func(path string) (string, map[string]any) {
		return "bdev_aio_create", aioParams(path, "Cold")
	})
	// 128 in system calls, plus the runtime's own and a few running Go.
	if bound := int64(128 + 64); threads > bound {
		t.Errorf("the daemon peaked at %d threads under 20 x 64 reads; want at most %d", threads, bound)
	}
}

// slowFileReadStorm makes the bdev "Cold" on a cold file of size bytes
// with the method and params create gives, throttles the daemon's reads of
// it to 500 per second, runs 20 fio nbd jobs of 64 random reads in flight
// on it for 3 s, logs the usage under label, checks the daemon still
// answers RPCs, and returns its peak thread count.
func slowFileReadStorm(t *testing.T, label string, size int, create func(path string) (string, map[string]any)) int64 {
	t.Helper()
	testutil.RequireTool(t, "fio")
	dir := shortTempDir(t)
	path := filepath.Join(dir, "cold.img")
	writeColdFile(t, path, size)

	d := StartDaemon(t, DaemonOpts{Bare: true})
	throttleReads(t, d.cmd.Process.Pid, path, 500)
	method, params := create(path)
	d.Call(t, method, params)
	d.Call(t, "nbd_start_disk", map[string]any{"bdev_name": "Cold"})

	before := d.usage(t)
	sampler := d.sampleRSS(t)
	testutil.Run(t, nil, "fio", "--name=abuse", "--ioengine=nbd", "--uri="+d.URI("Cold"),
		"--rw=randread", "--bs=4k", "--iodepth=64", "--numjobs=20", fmt.Sprintf("--size=%dm", size>>20),
		"--time_based", "--runtime=3", "--norandommap", "--randrepeat=0", "--group_reporting", "--output-format=terse")
	peak := sampler.peaks()
	after := d.usage(t)
	logAbuse(t, label, before, after, peak.rssKiB)
	t.Logf("ABUSE %s threads_peak=%d", label, peak.threads)
	d.rpcAnswers(t, "after the read storm")
	return peak.threads
}

// writeColdFile writes size random bytes to path, durably, and drops them
// from the page cache, so that reads go to the disk.
func writeColdFile(t *testing.T, path string, size int) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4<<20)
	for done := 0; done < size; done += len(buf) {
		rand.Read(buf)
		if _, err := f.Write(buf); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
}

// throttleReads limits process pid's reads from the disk holding path to
// iops per second, with a block IO cgroup of its own (cgroup v1 blkio, or
// v2 io.max), removed at cleanup.
func throttleReads(t *testing.T, pid int, path string, iops int) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	disk := wholeDisk(t, unix.Major(st.Dev), unix.Minor(st.Dev))
	var dir, file, rule string
	switch {
	case fileExists("/sys/fs/cgroup/blkio/blkio.throttle.read_iops_device"):
		dir, file, rule = "/sys/fs/cgroup/blkio", "blkio.throttle.read_iops_device", fmt.Sprintf("%s %d", disk, iops)
	case fileExists("/sys/fs/cgroup/cgroup.subtree_control"):
		dir, file, rule = "/sys/fs/cgroup", "io.max", fmt.Sprintf("%s riops=%d", disk, iops)
		if err := os.WriteFile("/sys/fs/cgroup/cgroup.subtree_control", []byte("+io"), 0); err != nil {
			t.Fatalf("enable the io controller (the test throttles the daemon's reads; it needs root): %v", err)
		}
	default:
		t.Fatal("no block IO cgroup controller (v1 blkio or v2 io) to throttle the daemon's reads with")
	}
	cg := filepath.Join(dir, fmt.Sprintf("blockcache-e2e-%d", pid))
	if err := os.Mkdir(cg, 0o755); err != nil {
		t.Fatalf("create a cgroup (the test throttles the daemon's reads; it needs root): %v", err)
	}
	t.Cleanup(func() {
		// Move the process back out (it may have exited), then remove.
		os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0)
		os.Remove(cg)
	})
	if err := os.WriteFile(filepath.Join(cg, file), []byte(rule), 0); err != nil {
		t.Fatalf("throttle %s: %v", rule, err)
	}
	if err := os.WriteFile(filepath.Join(cg, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0); err != nil {
		t.Fatal(err)
	}
}

// wholeDisk returns "MAJ:MIN" of the disk holding block device maj:min (its
// parent when it is a partition), as IO throttling wants.
func wholeDisk(t *testing.T, maj, min uint32) string {
	t.Helper()
	dev := fmt.Sprintf("%d:%d", maj, min)
	sys, err := filepath.EvalSymlinks("/sys/dev/block/" + dev)
	if err != nil {
		t.Fatalf("the file system of the test's files is on %s, not a block device: %v", dev, err)
	}
	if fileExists(filepath.Join(sys, "partition")) {
		b, err := os.ReadFile(filepath.Join(filepath.Dir(sys), "dev"))
		if err != nil {
			t.Fatal(err)
		}
		dev = string(b[:len(b)-1])
	}
	return dev
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
