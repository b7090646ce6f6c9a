package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"blockcache/internal/rpcclient"
)

// flushStatusJSON runs cache flush-status --json.
func flushStatusJSON(t *testing.T, d *testDaemon, name string) map[string]any {
	t.Helper()
	out := d.ok(t, "cache", "flush-status", name, "--json")
	var st map[string]any
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("cache flush-status --json: %v\n%s", err, out)
	}
	return st
}

func dirtyCount(t *testing.T, d *testDaemon, name string) uint64 {
	t.Helper()
	return statsJSON(t, d, name)["usage"]["dirty"].Count
}

// slowCoreCache creates, with the CLI, the wb volume C0 on a RAM cache
// M0 of cacheMiB over Slow1, a delay bdev on the RAM core M1 of coreMiB
// whose writes take writeUS.
func slowCoreCache(t *testing.T, d *testDaemon, cacheMiB, coreMiB, writeUS int) {
	t.Helper()
	d.malloc(t, "M0", cacheMiB<<20/512, 512)
	d.malloc(t, "M1", coreMiB<<20/512, 512)
	d.call(t, "bdev_delay_create", map[string]any{"base_bdev_name": "M1", "name": "Slow1",
		"avg_read_latency": 0, "p99_read_latency": 0, "avg_write_latency": writeUS, "p99_write_latency": writeUS})
	d.ok(t, "cache", "create", "C0", "--mode", "wb", "--cache", "M0", "--core", "Slow1")
}

func TestCacheFlush(t *testing.T) {
	d := startDaemon(t)
	// A 4 MiB cache (about 1000 lines of 4 KiB) on a 32 MiB core. Every
	// write to the core takes 5 ms, so writing back 300 lines one by one
	// takes 1.5 s at least: long enough to watch.
	slowCoreCache(t, d, 4, 32, 5000)

	// No flush yet.
	if got := d.ok(t, "cache", "flush-status", "C0"); got != "C0: flush finished, status 0 (success), 0 of 0 dirty lines written back\n" {
		t.Errorf("flush-status before any flush: %q", got)
	}

	const lines = 300
	d.ok(t, "export", "start", "C0")
	nbdIO(t, d, "C0", lines)
	d.ok(t, "export", "stop", "C0")
	if n := dirtyCount(t, d, "C0"); n != lines {
		t.Fatalf("dirty after %d writes in wb: %d", lines, n)
	}

	// --no-wait starts it and returns at once.
	start := time.Now()
	if got := d.ok(t, "cache", "flush", "C0", "--no-wait"); got != "C0: flush started\n" {
		t.Errorf("cache flush --no-wait printed %q", got)
	}
	if el := time.Since(start); el > time.Second {
		t.Errorf("cache flush --no-wait took %v", el)
	}
	if got := d.ok(t, "cache", "flush-status", "C0"); !strings.HasPrefix(got, "C0: flush in progress, ") || !strings.Contains(got, " dirty lines written back") {
		t.Errorf("flush-status during the flush: %q", got)
	}
	if st := flushStatusJSON(t, d, "C0"); st["in_progress"] != true || st["status"] != nil {
		t.Errorf("flush-status --json during the flush: %v", st)
	}

	// cache flush waits for the flush running, with a bar on stderr.
	r := d.cli(t, "cache", "flush", "C0", "--progress")
	if r.code != 0 || r.stdout != "C0: flushed, 300 of 300 dirty lines written back\n" {
		t.Fatalf("cache flush: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if !strings.Contains(r.stderr, "flush C0") || !strings.Contains(r.stderr, "/300") {
		t.Errorf("cache flush --progress: no progress bar on stderr: %q", r.stderr)
	}
	if n := dirtyCount(t, d, "C0"); n != 0 {
		t.Errorf("dirty after cache flush: %d", n)
	}
	if got := d.ok(t, "cache", "flush-status", "C0"); got != "C0: flush finished, status 0 (success), 300 of 300 dirty lines written back\n" {
		t.Errorf("flush-status after the flush: %q", got)
	}
	if st := flushStatusJSON(t, d, "C0"); st["in_progress"] != false || st["status"] != 0.0 || st["flushed_lines"] != 300.0 || st["total_lines"] != 300.0 {
		t.Errorf("flush-status --json after the flush: %v", st)
	}

	// Dirty data again, flushed by cache flush alone; stderr is not a
	// terminal, so no bar.
	d.ok(t, "export", "start", "C0")
	nbdIO(t, d, "C0", 10)
	d.ok(t, "export", "stop", "C0")
	if n := dirtyCount(t, d, "C0"); n != 10 {
		t.Fatalf("dirty after 10 more writes: %d", n)
	}
	if got := d.ok(t, "cache", "flush", "C0"); got != "C0: flushed, 10 of 10 dirty lines written back\n" {
		t.Errorf("cache flush printed %q", got)
	}
	if n := dirtyCount(t, d, "C0"); n != 0 {
		t.Errorf("dirty after the second cache flush: %d", n)
	}
	// Nothing dirty: nothing to do.
	if got := d.ok(t, "cache", "flush", "C0"); got != "C0: flushed, 0 of 0 dirty lines written back\n" {
		t.Errorf("cache flush with nothing dirty printed %q", got)
	}

	d.fails(t, []string{"cache", "flush", "C9"}, "blockcache: cache flush C9: No such device")
	d.fails(t, []string{"cache", "flush", "C9", "--no-wait"}, "blockcache: cache flush C9: No such device")
	d.fails(t, []string{"cache", "flush-status", "C9"}, "blockcache: cache flush-status C9: No such device")
	d.fails(t, []string{"cache", "flush"}, "accepts 1 arg(s), received 0")
}

func TestCacheFlushFails(t *testing.T) {
	d := startDaemon(t)
	d.malloc(t, "M0", 8192, 512)
	d.malloc(t, "M1", 65536, 512)
	d.call(t, "bdev_error_create", map[string]any{"base_name": "M1"})
	d.ok(t, "cache", "create", "C0", "--mode", "wb", "--cache", "M0", "--core", "EE_M1")
	d.ok(t, "export", "start", "C0")
	nbdIO(t, d, "C0", 4)
	d.ok(t, "export", "stop", "C0")
	d.call(t, "bdev_error_inject_error", map[string]any{"name": "EE_M1", "io_type": "write", "error_type": "failure", "num": 1000})

	d.fails(t, []string{"cache", "flush", "C0"}, "blockcache: cache flush C0: flush failed with status -5 (input/output error), ")
	if got := d.ok(t, "cache", "flush-status", "C0"); !strings.HasPrefix(got, "C0: flush failed, status -5 (input/output error), ") {
		t.Errorf("flush-status after a failed flush: %q", got)
	}
	if st := flushStatusJSON(t, d, "C0"); st["in_progress"] != false || st["status"] != -5.0 {
		t.Errorf("flush-status --json after a failed flush: %v", st)
	}
	if n := dirtyCount(t, d, "C0"); n != 4 {
		t.Errorf("dirty after a failed flush: %d, want 4", n)
	}

	// Once the core takes writes again, the flush goes through.
	d.call(t, "bdev_error_inject_error", map[string]any{"name": "EE_M1", "io_type": "clear", "error_type": "failure"})
	if got := d.ok(t, "cache", "flush", "C0"); got != "C0: flushed, 4 of 4 dirty lines written back\n" {
		t.Errorf("cache flush after clearing the errors printed %q", got)
	}
	if n := dirtyCount(t, d, "C0"); n != 0 {
		t.Errorf("dirty after the flush: %d", n)
	}
}

func TestCacheFlushClientFlags(t *testing.T) {
	dir, err := os.MkdirTemp("", "bc-cli-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "nobody.sock")
	for _, args := range [][]string{{"cache", "flush", "C0"}, {"cache", "flush", "C0", "--no-wait"}, {"cache", "flush-status", "C0"}, {"cache", "flush-cancel", "C0"}} {
		checkFails(t, args, runCLI(t, "", append(args, "-s", sock)...),
			"blockcache: cannot reach the daemon at "+sock+": connect: no such file or directory")
		checkFails(t, args, runCLI(t, "", append(args, "-s", sock, "--timeout", "0s")...), "--timeout must be positive")
		t.Setenv(EnvRPCSocket, sock)
		checkFails(t, args, runCLI(t, "", args...), "cannot reach the daemon at "+sock+":")
	}
	r := runCLI(t, "", "cache", "--help")
	for _, c := range []string{"flush", "flush-status", "flush-cancel"} {
		if !strings.Contains(r.stdout, "\n  "+c+" ") {
			t.Errorf("cache --help does not list %q:\n%s", c, r.stdout)
		}
	}
	r = runCLI(t, "", "--help")
	for _, c := range []string{"check", "inspect"} {
		if !strings.Contains(r.stdout, "\n  "+c+" ") {
			t.Errorf("--help does not list %q:\n%s", c, r.stdout)
		}
	}
}

func TestProgressView(t *testing.T) {
	var b strings.Builder
	pv := newProgressView(&b, "flush C0", "lines", true, 0)
	pv.update(0, 0) // total unknown yet: nothing
	if b.Len() != 0 || pv.shown() {
		t.Errorf("progress with no total drew %q", b.String())
	}
	pv.update(3, 10)
	if !pv.shown() || !strings.Contains(b.String(), "flush C0") || !strings.Contains(b.String(), "3/10") {
		t.Errorf("progress 3/10 drew %q", b.String())
	}
	pv.update(12, 20) // the total grew
	if !strings.Contains(b.String(), "12/20") {
		t.Errorf("progress 12/20 drew %q", b.String())
	}
	n := b.Len()
	pv.finish()
	if !strings.HasSuffix(b.String(), "\r") || b.Len() == n {
		t.Errorf("finish did not erase the bar: %q", b.String()[n:])
	}

	// Not a terminal and not forced, or not yet long enough: nothing.
	for _, pv := range []*progressView{
		newProgressView(&b, "x", "lines", false, 0),
		newProgressView(&b, "x", "lines", true, time.Hour),
	} {
		b.Reset()
		pv.update(3, 10)
		pv.finish()
		if b.Len() != 0 || pv.shown() {
			t.Errorf("progress drew %q", b.String())
		}
	}
}

// slowFlushDaemon is a daemon with wb volume C0 whose core's writes take
// 10 ms each, and lines dirty lines in it: a flush of it runs for seconds.
func slowFlushDaemon(t *testing.T, lines int) *testDaemon {
	t.Helper()
	d := startDaemon(t)
	slowCoreCache(t, d, 16, 64, 10000) // about 4000 lines of 4 KiB
	d.ok(t, "export", "start", "C0")
	nbdIO(t, d, "C0", lines)
	d.ok(t, "export", "stop", "C0")
	if n := dirtyCount(t, d, "C0"); n != uint64(lines) {
		t.Fatalf("dirty after %d writes in wb: %d", lines, n)
	}
	return d
}

func TestCacheFlushCancel(t *testing.T) {
	d := slowFlushDaemon(t, 1000)
	if got := d.ok(t, "cache", "flush-cancel", "C0"); got != "C0: no flush running\n" {
		t.Errorf("flush-cancel before any flush: %q", got)
	}
	d.ok(t, "cache", "flush", "C0", "--no-wait", "--write-through")
	got := d.ok(t, "cache", "flush-status", "C0")
	if !regexp.MustCompile(`^C0: flush in progress, \d+ of 1000 dirty lines written back \(\d+\.\d%\), [0-9.]+ [KMG]?i?B left at [0-9.]+ [KMG]?i?B/s, writes held write-through\n$`).MatchString(got) {
		t.Errorf("flush-status during a write-through flush: %q", got)
	}
	st := flushStatusJSON(t, d, "C0")
	if st["in_progress"] != true || st["write_through"] != true || st["total_lines"] != 1000.0 ||
		st["remaining_bytes"] != (1000-st["flushed_lines"].(float64))*4096 {
		t.Errorf("flush-status --json during the flush: %v", st)
	}
	got = d.ok(t, "cache", "flush-cancel", "C0")
	m := regexp.MustCompile(`^C0: flush cancelled, (\d+) of 1000 dirty lines written back\n$`).FindStringSubmatch(got)
	if m == nil {
		t.Fatalf("flush-cancel of a running flush printed %q", got)
	}
	st = flushStatusJSON(t, d, "C0")
	if st["in_progress"] != false || st["status"] != -125.0 || m[1] != fmt.Sprint(st["flushed_lines"]) {
		t.Errorf("flush-status --json after cancel: %v (cancel said %s lines)", st, m[1])
	}
	if n := dirtyCount(t, d, "C0"); n != 1000-uint64(st["flushed_lines"].(float64)) {
		t.Errorf("dirty after the cancel: %d, flushed %v of 1000", n, st["flushed_lines"])
	}
	if got := d.ok(t, "cache", "flush-status", "C0"); !strings.HasPrefix(got, "C0: flush cancelled, status -125 (operation canceled), ") {
		t.Errorf("flush-status after cancel: %q", got)
	}
	if got := d.ok(t, "cache", "flush-cancel", "C0"); got != "C0: no flush running\n" {
		t.Errorf("flush-cancel after cancel: %q", got)
	}
	d.fails(t, []string{"cache", "flush-cancel", "C9"}, "blockcache: cache flush-cancel C9: No such device")
	d.fails(t, []string{"cache", "flush", "C0", "--on-interrupt", "later"}, `--on-interrupt "later": want ask, cancel or leave`)
}

// TestCacheFlushInterrupt: an interrupt while cache flush waits cancels the
// flush or leaves it running, as --on-interrupt and the answer say.
func TestCacheFlushInterrupt(t *testing.T) {
	d := slowFlushDaemon(t, 1000)
	c, err := rpcclient.Dial(d.sock, rpcclient.WithTimeout(30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, tc := range []struct {
		action, answer string
		cancels        bool
	}{
		{interruptAsk, "y\n", true},
		{interruptAsk, "\n", false},
		{interruptAsk, "no\n", false},
		{interruptLeave, "", false},
		{interruptCancel, "", true},
	} {
		t.Run(tc.action+"/"+strings.TrimSpace(tc.answer), func(t *testing.T) {
			d.call(t, "bdev_ocf_flush_start", map[string]any{"name": "C0"})
			interrupts := make(chan os.Signal, 1)
			interrupts <- os.Interrupt
			var out, errOut strings.Builder
			w := &flushWaiter{c: c, what: "cache flush C0", name: "C0", out: &out, errOut: &errOut,
				pv: newProgressView(&errOut, "flush C0", "lines", false, 0), interrupts: interrupts,
				onInterrupt: tc.action, answers: strings.NewReader(tc.answer)}
			err := w.wait()
			asked := strings.Contains(errOut.String(), "C0: cancel the flush in the daemon? [y/N]")
			if asked != (tc.action == interruptAsk) {
				t.Errorf("asked %v with --on-interrupt %s: %q", asked, tc.action, errOut.String())
			}
			st := flushStatusJSON(t, d, "C0")
			if tc.cancels {
				if err == nil || !strings.Contains(err.Error(), "cache flush C0: flush cancelled, status -125 (operation canceled), ") {
					t.Errorf("wait after an interrupt that cancels: %v", err)
				}
				if st["in_progress"] != false || st["status"] != -125.0 {
					t.Errorf("flush status after an interrupt that cancels: %v", st)
				}
				return
			}
			var ee exitError
			if !errors.As(err, &ee) || ee.code != 130 || !strings.Contains(errOut.String(), "stopped waiting; the flush goes on in the daemon") {
				t.Errorf("wait after an interrupt that leaves the flush: %v, stderr %q", err, errOut.String())
			}
			if st["in_progress"] != true {
				t.Errorf("the flush stopped after an interrupt that leaves it: %v", st)
			}
			d.ok(t, "cache", "flush-cancel", "C0")
		})
	}
}
