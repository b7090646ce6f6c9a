package e2e

// Abuse by local clients: what any user on the machine can do to the NBD
// port must not exhaust the daemon's memory or file descriptors, nor keep
// the management socket from answering. Each test logs the daemon's RSS
// and thread count before and after, as
//
//	ABUSE name rss_before=KiB rss_peak=KiB rss_after=KiB threads_before=N threads_after=N

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"blockcache/internal/nbd/nbdclient"
	"blockcache/internal/rpcclient"
)

// procUsage is what /proc/PID/status says of a process.
type procUsage struct {
	rssKiB, hwmKiB int64 // VmRSS, VmHWM (the peak RSS)
	threads        int64
}

// readUsage reads process pid's procUsage.
func readUsage(pid int) (procUsage, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return procUsage{}, err
	}
	var u procUsage
	for line := range strings.Lines(string(b)) {
		key, val, _ := strings.Cut(line, ":")
		val = strings.TrimSuffix(strings.TrimSpace(val), " kB")
		switch key {
		case "VmRSS":
			u.rssKiB, err = strconv.ParseInt(val, 10, 64)
		case "VmHWM":
			u.hwmKiB, err = strconv.ParseInt(val, 10, 64)
		case "Threads":
			u.threads, err = strconv.ParseInt(val, 10, 64)
		}
		if err != nil {
			return procUsage{}, fmt.Errorf("/proc/%d/status %s: %w", pid, key, err)
		}
	}
	return u, nil
}

func (d *Daemon) usage(t *testing.T) procUsage {
	t.Helper()
	u, err := readUsage(d.cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// openFDs counts the daemon's open file descriptors.
func (d *Daemon) openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", d.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// rssSampler records the daemon's peak RSS and thread count until stopped.
type rssSampler struct {
	stop chan struct{}
	done chan procUsage
}

func (d *Daemon) sampleRSS(t *testing.T) *rssSampler {
	s := &rssSampler{stop: make(chan struct{}), done: make(chan procUsage, 1)}
	pid := d.cmd.Process.Pid
	go func() {
		var peak procUsage
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			if u, err := readUsage(pid); err == nil {
				peak.rssKiB, peak.threads = max(peak.rssKiB, u.rssKiB), max(peak.threads, u.threads)
			}
			select {
			case <-s.stop:
				s.done <- peak
				return
			case <-tick.C:
			}
		}
	}()
	return s
}

// peak stops the sampler and returns the peak RSS in KiB.
func (s *rssSampler) peak() int64 { return s.peaks().rssKiB }

// peaks stops the sampler and returns the peak RSS and thread count.
func (s *rssSampler) peaks() procUsage {
	close(s.stop)
	return <-s.done
}

func logAbuse(t *testing.T, name string, before, after procUsage, peakKiB int64) {
	t.Logf("ABUSE %s rss_before=%dKiB rss_peak=%dKiB rss_after=%dKiB threads_before=%d threads_after=%d",
		name, before.rssKiB, peakKiB, after.rssKiB, before.threads, after.threads)
}

// rpcAnswers checks that a new management connection is accepted and
// answered within a few seconds.
func (d *Daemon) rpcAnswers(t *testing.T, when string) {
	t.Helper()
	start := time.Now()
	c, err := rpcclient.Dial(d.Sock, rpcclient.WithTimeout(5*time.Second))
	if err != nil {
		t.Fatalf("%s: RPC connect: %v", when, err)
	}
	defer c.Close()
	if _, err := c.Call("bdev_get_bdevs", nil); err != nil {
		t.Fatalf("%s: bdev_get_bdevs: %v", when, err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("%s: RPC answered after %v", when, d)
	}
}

// greeted connects to the NBD port and reports whether the server sent
// its greeting (true) or closed the connection (false). A connection that
// gets neither within five seconds fails the test.
func greeted(t *testing.T, addr string) (net.Conn, bool) {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	var greeting [18]byte
	if _, err := io.ReadFull(nc, greeting[:]); err != nil {
		nc.Close()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatal("the NBD server neither greeted nor closed a connection within 5s")
		}
		return nil, false
	}
	nc.SetReadDeadline(time.Time{})
	t.Cleanup(func() { nc.Close() })
	return nc, true
}

// nbdinfoFails runs nbdinfo on uri and expects it to fail promptly, as a
// client sees a refused connection.
func nbdinfoFails(t *testing.T, uri string) {
	t.Helper()
	nbdinfo, err := exec.LookPath("nbdinfo")
	if err != nil {
		t.Fatal("nbdinfo not installed (libnbd-bin): ", err)
	}
	start := time.Now()
	cmd := exec.Command(nbdinfo, uri)
	done := make(chan []byte, 1)
	go func() { out, _ := cmd.CombinedOutput(); done <- out }()
	select {
	case out := <-done:
		if cmd.ProcessState.Success() {
			t.Fatalf("nbdinfo %s succeeded over the limit:\n%s", uri, out)
		}
		t.Logf("nbdinfo over the limit, after %v: %s", time.Since(start).Round(time.Millisecond), strings.TrimSpace(string(out)))
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("nbdinfo %s hangs over the limit", uri)
	}
}

// nbdinfoWorks waits until nbdinfo on uri succeeds.
func nbdinfoWorks(t *testing.T, uri string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, err := exec.Command("nbdinfo", "--size", uri).CombinedOutput()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("nbdinfo %s still fails: %v\n%s", uri, err, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Fifty clients each send a 32 MiB WRITE with all but the last MiB of its
// payload, then stall. Payloads are buffered within the in-flight budget
// (256 MiB) and each stalled one is dropped after the payload timeout;
// once all are gone the daemon's memory goes back to where it was. Before
// the bounds, this took the RSS to 1.6 GB and kept it there.
func TestAbuseStalledWrites(t *testing.T) {
	const (
		conns   = 50
		timeout = time.Second
		request = 32 << 20
	)
	d := StartDaemon(t, DaemonOpts{Bare: true, Args: []string{"--nbd-payload-timeout", timeout.String()}})
	d.Call(t, "bdev_malloc_create", mallocParams("Abuse", 64, 512))
	d.Call(t, "nbd_start_disk", map[string]any{"bdev_name": "Abuse"})
	clients := make([]*nbdclient.Client, conns)
	for i := range clients {
		clients[i] = d.nbdDial(t, "Abuse")
	}
	before := d.usage(t)
	sampler := d.sampleRSS(t)

	partial := make([]byte, request-1<<20)
	start := time.Now()
	errs := make(chan error, conns)
	for _, c := range clients {
		go func() {
			_, err := c.Do(nbdclient.Request{Type: nbdclient.CmdWrite, Length: request, Payload: partial})
			if err == nil {
				err = errors.New("a WRITE with a short payload got a reply")
			} else if d := time.Since(start); d < timeout {
				err = fmt.Errorf("dropped after %v, before the payload timeout of %v", d, timeout)
			} else {
				err = nil
			}
			errs <- err
		}()
	}
	d.rpcAnswers(t, "while stalled writes hold the budget")
	for range conns {
		select {
		case err := <-errs:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(60 * time.Second):
			t.Fatal("stalled writes still connected after 60s")
		}
	}
	t.Logf("%d stalled writes dropped within %v", conns, time.Since(start).Round(time.Millisecond))
	time.Sleep(3 * time.Second) // idle: the memory of the dropped buffers goes back to the OS
	peak := sampler.peak()
	after := d.usage(t)
	logAbuse(t, "stalled-writes", before, after, peak)
	// Payload buffers in use are bounded by the budget; with the GC's
	// default pacing (GOGC=100) dropped ones pile up to as much as the heap
	// held before it collects them.
	const budgetKiB = 256 << 10
	if bound := 2*(before.rssKiB+budgetKiB) + 64<<10; peak > bound {
		t.Errorf("RSS peaked at %d KiB from %d KiB, beyond %d KiB (twice the RSS before plus the %d KiB budget, and 64 MiB)",
			peak, before.rssKiB, bound, budgetKiB)
	}
	if after.rssKiB > before.rssKiB+64<<10 {
		t.Errorf("RSS %d KiB 3s after the stalled clients left, from %d KiB before", after.rssKiB, before.rssKiB)
	}
	if n := strings.Count(d.Stderr(), "WRITE payload not received within the payload timeout (1s): 33554432-byte payload"); n != conns {
		t.Errorf("%d disconnects logged with the payload timeout, want %d", n, conns)
	}
	// The export still works, for a real client.
	run := exec.Command("qemu-io", "-f", "raw", "-c", "write -P 0x5a 0 1M", "-c", "read -P 0x5a 0 1M", d.URI("Abuse"))
	if out, err := run.CombinedOutput(); err != nil {
		t.Fatalf("qemu-io after the abuse: %v\n%s", err, out)
	}
	d.Stop(t)
}

// The default cap of 1024 connections holds against 1124 idle clients: the
// 100 beyond it are closed at once (nbdinfo fails promptly instead of
// hanging), management RPCs are answered, and a slot freed is usable.
func TestAbuseConnectionCap(t *testing.T) {
	const (
		limit = 1024
		extra = 100
	)
	d := StartDaemon(t, DaemonOpts{Bare: true})
	d.Call(t, "bdev_malloc_create", mallocParams("Abuse", 8, 512))
	d.Call(t, "nbd_start_disk", map[string]any{"bdev_name": "Abuse"})
	before := d.usage(t)
	sampler := d.sampleRSS(t)

	// Idle clients in transmission, as the 20,000 that exhausted the fds.
	held := make([]*nbdclient.Client, limit)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var dialErr error
	for w := range 8 {
		wg.Go(func() {
			for i := w; i < limit; i += 8 {
				c, err := nbdclient.Dial("tcp", d.NBDAddr, nbdclient.Options{Export: "Abuse"})
				if err != nil {
					mu.Lock()
					dialErr = fmt.Errorf("client %d of %d: %w", i+1, limit, err)
					mu.Unlock()
					return
				}
				held[i] = c
			}
		})
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, c := range held {
			if c != nil {
				c.Close()
			}
		}
	})
	if dialErr != nil {
		t.Fatal(dialErr)
	}
	for i := range extra {
		start := time.Now()
		if _, ok := greeted(t, d.NBDAddr); ok {
			t.Fatalf("connection %d over the cap was greeted", i+1)
		}
		if dt := time.Since(start); dt > time.Second {
			t.Fatalf("connection over the cap closed after %v", dt)
		}
	}
	nbdinfoFails(t, d.URI("Abuse"))
	d.rpcAnswers(t, "at the connection cap")
	if n := strings.Count(d.Stderr(), "nbd connection refused"); n < 1 || n > 2 {
		t.Errorf("%d refusal lines logged for %d refusals, want one or two", n, extra+1)
	}
	if !strings.Contains(d.Stderr(), "reason=\"at the connection cap of 1024 connections\"") {
		t.Errorf("no refusal naming the cap:\n%s", lastLines(d.Stderr(), 5))
	}
	if err := held[0].ReadAt(make([]byte, 4096), 0); err != nil {
		t.Fatalf("an idle client under the cap: %v", err)
	}
	held[0].Close()
	nbdinfoWorks(t, d.URI("Abuse"))

	for _, c := range held {
		c.Close()
	}
	time.Sleep(2 * time.Second) // connection goroutines end
	peak := sampler.peak()
	after := d.usage(t)
	logAbuse(t, "connection-cap", before, after, peak)
	d.Stop(t)
}

// With the file descriptor limit lowered under the connection cap (as on a
// host with a low hard limit), NBD connections are refused once the open
// descriptors come within the reserve of the limit, while new management
// connections still get descriptors and answers.
func TestAbuseFDExhaustion(t *testing.T) {
	const room = 200 // descriptors for NBD above the reserve of 64
	d := StartDaemon(t, DaemonOpts{Bare: true})
	d.Call(t, "bdev_malloc_create", mallocParams("Abuse", 8, 512))
	d.Call(t, "nbd_start_disk", map[string]any{"bdev_name": "Abuse"})
	d.closeClient() // its connection would hold a descriptor
	before := d.usage(t)
	sampler := d.sampleRSS(t)

	limit := d.openFDs(t) + 64 + room
	pid := strconv.Itoa(d.cmd.Process.Pid)
	if out, err := exec.Command("prlimit", "--pid", pid, fmt.Sprintf("--nofile=%d:%d", limit, limit)).CombinedOutput(); err != nil {
		t.Fatalf("prlimit: %v\n%s", err, out)
	}
	var admitted []net.Conn
	refused := 0
	for range 2 * room {
		if nc, ok := greeted(t, d.NBDAddr); ok {
			admitted = append(admitted, nc)
		} else {
			refused++
		}
	}
	t.Logf("RLIMIT_NOFILE %d: %d NBD connections admitted, %d refused; %d descriptors open", limit, len(admitted), refused, d.openFDs(t))
	// The daemon's own descriptors may have changed by one or two since
	// they were counted (the RPC connection closed).
	if len(admitted) < room-16 || len(admitted) > room+2 {
		t.Errorf("%d connections admitted with room for %d descriptors above the reserve", len(admitted), room)
	}
	if open := d.openFDs(t); open > limit-64 {
		t.Errorf("%d descriptors open, within the reserve of the limit %d", open, limit)
	}
	for i := range 8 {
		d.rpcAnswers(t, fmt.Sprintf("RPC connection %d with NBD refused for descriptors", i+1))
	}
	nbdinfoFails(t, d.URI("Abuse"))
	if !strings.Contains(d.Stderr(), "file descriptors nearly exhausted") {
		t.Errorf("no refusal naming the descriptors:\n%s", lastLines(d.Stderr(), 5))
	}
	for _, nc := range admitted {
		nc.Close()
	}
	nbdinfoWorks(t, d.URI("Abuse"))
	time.Sleep(2 * time.Second) // connection goroutines end
	peak := sampler.peak()
	after := d.usage(t)
	logAbuse(t, "fd-exhaustion", before, after, peak)
	d.Stop(t)
}

// lastLines returns the last n lines of s, for failure messages.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
