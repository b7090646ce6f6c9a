package e2e

import (
	"bytes"
	"encoding/json"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"blockcache/internal/rpcclient"
	"blockcache/internal/testutil"
)

// flushStatusReply is bdev_ocf_flush_status' result.
type flushStatusReply struct {
	InProgress      bool   `json:"in_progress"`
	Status          *int32 `json:"status"`
	FlushedLines    int64  `json:"flushed_lines"`
	TotalLines      int64  `json:"total_lines"`
	RemainingBytes  int64  `json:"remaining_bytes"`
	RateBytesPerSec int64  `json:"rate_bytes_per_sec"`
	WriteThrough    bool   `json:"write_through"`
}

func (d *Daemon) flushStatus(t *testing.T, name string) flushStatusReply {
	t.Helper()
	var st flushStatusReply
	d.CallInto(t, "bdev_ocf_flush_status", map[string]any{"name": name}, &st)
	return st
}

// startFio runs fio's nbd engine in the background: 4 KiB random writes at
// queue depth 16 over [32 MiB, 64 MiB) of uri for runtime. The channel
// gets its terse output and exit error when it ends.
func startFio(t *testing.T, uri string, runtime time.Duration) <-chan fioResult {
	t.Helper()
	testutil.RequireTool(t, "fio")
	res := make(chan fioResult, 1)
	go func() {
		out, err := testutil.RunErr(t, nil, "fio", "--name=flushload", "--ioengine=nbd", "--uri="+uri,
			"--rw=randwrite", "--bs=4k", "--iodepth=16", "--offset=32m", "--size=32m",
			"--time_based", "--runtime="+runtime.String(), "--output-format=terse", "--terse-version=3")
		res <- fioResult{out, err}
	}()
	return res
}

type fioResult struct {
	out string
	err error
}

// writes returns the write IOs a terse fio run reports, or -1 when it
// reports an error or no result.
func (r fioResult) writes() int64 {
	last := strings.TrimSpace(r.out)
	last = last[strings.LastIndex(last, "\n")+1:]
	f := strings.Split(last, ";")
	if r.err != nil || len(f) < 50 || f[4] != "0" {
		return -1
	}
	var n int64
	if err := json.Unmarshal([]byte(f[46]), &n); err != nil { // write: total IOs
		return -1
	}
	return n
}

// TestFlushCancelUnderWrites drives bdev_ocf_flush_start, _status and
// _cancel on the real daemon, on a wb volume whose core takes 1 ms a write
// (bdev_delay), while fio keeps writing to it: a flush is cancelled
// promptly and says so; a flush with write_through ends with nothing left
// dirty though fio still writes; a plain one ends too; bdev_ocf_delete
// under fio ends, and the core alone then holds the data written before.
func TestFlushCancelUnderWrites(t *testing.T) {
	t.Parallel()
	d := StartDaemon(t, DaemonOpts{Bare: true})
	uri := d.createSlowCoreVolume(t, "FC", "wb", 64, 128, 4, 0, 1000)

	// 16 MiB of dirty data, 4096 lines: at 1 ms a core write, seconds of
	// write-back.
	qemuIO(t, uri, "write -P 0x11 0 16m")
	if s := d.stats(t, "FC"); s.Usage.Dirty.Count != 4096 {
		t.Fatalf("dirty 4 KiB blocks after writing 16 MiB in wb: %d", s.Usage.Dirty.Count)
	}
	fio := startFio(t, uri, 25*time.Second)
	time.Sleep(500 * time.Millisecond)

	// A flush, watched, then cancelled.
	expectJSON(t, "bdev_ocf_flush_start", d.Call(t, "bdev_ocf_flush_start", map[string]any{"name": "FC"}), "true")
	var st flushStatusReply
	deadline := time.Now().Add(30 * time.Second)
	for st = d.flushStatus(t, "FC"); st.FlushedLines == 0 || st.RateBytesPerSec == 0; st = d.flushStatus(t, "FC") {
		if !st.InProgress || time.Now().After(deadline) {
			t.Fatalf("flush status before it wrote anything back: %+v", st)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !st.InProgress || st.Status != nil || st.TotalLines < 4096 || st.WriteThrough ||
		st.RemainingBytes != (st.TotalLines-st.FlushedLines)*4096 {
		t.Fatalf("flush status while running: %+v", st)
	}
	start := time.Now()
	expectJSON(t, "bdev_ocf_flush_cancel", d.Call(t, "bdev_ocf_flush_cancel", map[string]any{"name": "FC"}), "true")
	took := time.Since(start)
	st = d.flushStatus(t, "FC")
	if st.InProgress || st.Status == nil || *st.Status != -125 || st.FlushedLines >= st.TotalLines ||
		st.RemainingBytes != (st.TotalLines-st.FlushedLines)*4096 {
		t.Fatalf("flush status after bdev_ocf_flush_cancel: %+v", st)
	}
	// One batch of 128 lines at 1 ms each, at most, and some slack.
	if took > 3*time.Second {
		t.Errorf("bdev_ocf_flush_cancel took %v", took)
	}
	t.Logf("cancelled after %d of %d lines in %v", st.FlushedLines, st.TotalLines, took)
	if s := d.stats(t, "FC"); s.Usage.Dirty.Count == 0 {
		t.Errorf("nothing dirty after a cancelled flush: %+v", s.Usage)
	}
	expectJSON(t, "bdev_ocf_flush_cancel with none running", d.Call(t, "bdev_ocf_flush_cancel", map[string]any{"name": "FC"}), "false")

	// With write_through the flush ends while fio still writes, leaving
	// nothing dirty; the volume is write-back again afterwards.
	expectJSON(t, "bdev_ocf_flush_start write_through",
		d.Call(t, "bdev_ocf_flush_start", map[string]any{"name": "FC", "write_through": true}), "true")
	start = time.Now()
	deadline = start.Add(60 * time.Second)
	sawWT := false
	for st = d.flushStatus(t, "FC"); st.InProgress; st = d.flushStatus(t, "FC") {
		sawWT = sawWT || st.WriteThrough
		if time.Now().After(deadline) {
			t.Fatalf("write-through flush under fio still running after 60 s: %+v", st)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if st.Status == nil || *st.Status != 0 || !st.WriteThrough || st.RemainingBytes != 0 {
		t.Fatalf("write-through flush ended with %+v", st)
	}
	t.Logf("write-through flush under fio: %d lines in %v, %d B/s", st.FlushedLines, time.Since(start), st.RateBytesPerSec)
	select {
	case r := <-fio:
		t.Fatalf("fio ended before the write-through flush did: %s %v", r.out, r.err)
	default:
	}
	// The hold is released: fio's writes make dirty data again.
	deadline = time.Now().Add(10 * time.Second)
	for d.stats(t, "FC").Usage.Dirty.Count == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no dirty data 10 s after the write-through flush: the volume stayed write-through")
		}
		time.Sleep(20 * time.Millisecond)
	}

	// A plain flush (SPDK's) ends under fio too.
	expectJSON(t, "bdev_ocf_flush_start", d.Call(t, "bdev_ocf_flush_start", map[string]any{"name": "FC"}), "true")
	start = time.Now()
	deadline = start.Add(60 * time.Second)
	for st = d.flushStatus(t, "FC"); st.InProgress; st = d.flushStatus(t, "FC") {
		if time.Now().After(deadline) {
			t.Fatalf("flush under fio still running after 60 s: %+v", st)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if st.Status == nil || *st.Status != 0 || st.WriteThrough {
		t.Fatalf("flush under fio ended with %+v", st)
	}
	t.Logf("plain flush under fio: %d lines in %v, %d B/s; %d dirty 4 KiB blocks after it", st.FlushedLines, time.Since(start),
		st.RateBytesPerSec, d.stats(t, "FC").Usage.Dirty.Count)
	r := <-fio
	if r.writes() <= 0 {
		t.Fatalf("fio during the flushes:\n%s\n%v", r.out, r.err)
	}

	// bdev_ocf_delete while fio writes: it ends, and the core holds the
	// 16 MiB written first (fio wrote only above 32 MiB).
	qemuIO(t, uri, "write -P 0x22 0 8m")
	fio = startFio(t, uri, 20*time.Second)
	time.Sleep(time.Second)
	c, err := rpcclient.Dial(d.Sock, rpcclient.WithTimeout(90*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start = time.Now()
	deleted := make(chan error, 1)
	go func() {
		_, err := c.Call("bdev_ocf_delete", map[string]any{"name": "FC"})
		deleted <- err
	}()
	select {
	case err := <-deleted:
		if err != nil {
			t.Fatalf("bdev_ocf_delete under fio: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("bdev_ocf_delete under fio did not end in 60 s")
	}
	t.Logf("bdev_ocf_delete under fio took %v", time.Since(start))
	<-fio // ended early: its export went away
	var coreURI string
	d.CallInto(t, "nbd_start_disk", map[string]any{"bdev_name": "FC_slow"}, &coreURI)
	qemuIO(t, coreURI, "read -P 0x22 0 8m", "read -P 0x11 8m 8m")
}

// TestFlushInterrupt sends SIGINT to `blockcache cache flush` while it
// waits: by default (stdin not a terminal) it stops waiting and the flush
// goes on; with --on-interrupt cancel it cancels the flush in the daemon.
func TestFlushInterrupt(t *testing.T) {
	t.Parallel()
	d := StartDaemon(t, DaemonOpts{Bare: true})
	uri := d.createSlowCoreVolume(t, "FI", "wb", 64, 128, 4, 0, 20000)
	qemuIO(t, uri, "write -P 0x33 0 16m") // 4096 lines at 20 ms a core write

	interrupted := func(args ...string) (code int, stderr string) {
		t.Helper()
		cmd := exec.Command(binPath, append([]string{"cache", "flush", "FI", "-s", d.Sock}, args...)...)
		var errb bytes.Buffer
		cmd.Stderr = &errb
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for st := d.flushStatus(t, "FI"); !st.InProgress || st.FlushedLines == 0; st = d.flushStatus(t, "FI") {
			if time.Now().After(deadline) {
				cmd.Process.Kill()
				t.Fatalf("no flush under way 10 s after cache flush started: %+v", st)
			}
			time.Sleep(10 * time.Millisecond)
		}
		time.Sleep(300 * time.Millisecond) // past the first poll: the command waits
		if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			t.Fatal("cache flush did not end 30 s after SIGINT")
		}
		return cmd.ProcessState.ExitCode(), errb.String()
	}

	code, stderr := interrupted()
	if code != 130 || !strings.Contains(stderr, "cache flush FI: stopped waiting; the flush goes on in the daemon") {
		t.Fatalf("cache flush interrupted: exit %d, stderr %q", code, stderr)
	}
	if st := d.flushStatus(t, "FI"); !st.InProgress {
		t.Fatalf("the flush stopped when cache flush stopped waiting: %+v", st)
	}
	code, stderr = interrupted("--on-interrupt", "cancel")
	if code != 1 || !strings.Contains(stderr, "cache flush FI: flush cancelled, status -125 (operation canceled), ") {
		t.Fatalf("cache flush --on-interrupt cancel interrupted: exit %d, stderr %q", code, stderr)
	}
	if st := d.flushStatus(t, "FI"); st.InProgress || st.Status == nil || *st.Status != -125 {
		t.Fatalf("flush status after cache flush cancelled it: %+v", st)
	}
}
