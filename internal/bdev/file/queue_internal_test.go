package file

import (
	"bytes"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"blockcache/internal/bdev"
)

// gatedCalls stands in for system calls that block until the gate opens,
// counting how many are blocked at once.
type gatedCalls struct {
	gate chan struct{} // closed to let every call through

	mu       sync.Mutex
	inFlight int
	maxSeen  int
	entered  int
	changed  chan struct{} // closed and replaced on every entry
}

func newGatedCalls() *gatedCalls {
	return &gatedCalls{gate: make(chan struct{}), changed: make(chan struct{})}
}

func (g *gatedCalls) enter() {
	g.mu.Lock()
	g.inFlight++
	g.entered++
	g.maxSeen = max(g.maxSeen, g.inFlight)
	close(g.changed)
	g.changed = make(chan struct{})
	g.mu.Unlock()
	<-g.gate
	g.mu.Lock()
	g.inFlight--
	g.mu.Unlock()
}

// waitEntered waits until n calls have entered.
func (g *gatedCalls) waitEntered(t *testing.T, n int) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		g.mu.Lock()
		entered, changed := g.entered, g.changed
		g.mu.Unlock()
		if entered >= n {
			return
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("%d calls entered after 10s, want %d", entered, n)
		}
	}
}

func (g *gatedCalls) counts() (inFlight, maxSeen, entered int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.inFlight, g.maxSeen, g.entered
}

// TestQueueDepthBoundsSystemCalls gives a device system calls that block
// and more IOs than its queue depth: only depth of them may be in a call at
// once, the rest wait until slots free up, and all complete.
func TestQueueDepthBoundsSystemCalls(t *testing.T) {
	const depth, ios = 4, 24
	path := filepath.Join(t.TempDir(), "slow")
	d, err := Open("Slow", path, Options{Create: true, Size: 4 << 20, QueueDepth: depth})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	g := newGatedCalls()
	d.sys.pread = func(fd int, p []byte, off int64) (int, error) { g.enter(); return unix.Pread(fd, p, off) }
	d.sys.pwrite = func(fd int, p []byte, off int64) (int, error) { g.enter(); return unix.Pwrite(fd, p, off) }
	d.sys.fdatasync = func(fd int) error { g.enter(); return unix.Fdatasync(fd) }

	errs := make(chan error, ios)
	for i := range ios {
		go func() {
			// 512-byte IOs: one system call each (see transfer).
			switch off := int64(i) * 512; i % 3 {
			case 0:
				errs <- d.ReadAt(make([]byte, 512), off)
			case 1:
				errs <- d.WriteAt(make([]byte, 512), off, false)
			default:
				errs <- d.Flush()
			}
		}()
	}
	g.waitEntered(t, depth)
	time.Sleep(100 * time.Millisecond) // give the others time to get in, were they able to
	if inFlight, _, entered := g.counts(); inFlight != depth || entered != depth {
		t.Fatalf("%d calls in flight, %d entered, with queue depth %d and %d IOs issued", inFlight, entered, depth, ios)
	}
	if n := len(errs); n != 0 {
		t.Fatalf("%d IOs returned while every call was blocked", n)
	}

	// Meanwhile a second device serves IO at once: the limit is per device.
	other := openForSyscallTest(t)
	want := bytes.Repeat([]byte{0x5a}, 4096)
	if err := other.WriteAt(want, 0, true); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(want))
	if err := other.ReadAt(got, 0); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("second device while the first is saturated: err %v, data equal %v", err, bytes.Equal(got, want))
	}
	if err := other.Flush(); err != nil {
		t.Fatal(err)
	}

	close(g.gate)
	for range ios {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if inFlight, maxSeen, entered := g.counts(); inFlight != 0 || maxSeen != depth || entered != ios {
		t.Fatalf("after all IO: %d in flight, at most %d at once, %d calls; want 0, %d, %d", inFlight, maxSeen, entered, depth, ios)
	}
}

// TestCloseWaitsForQueuedIO closes a device with IOs both in calls and
// queued behind them: Close returns only after all of them, and each
// either completed or failed as closed, never on a closed fd.
func TestCloseWaitsForQueuedIO(t *testing.T) {
	path := filepath.Join(t.TempDir(), "slow")
	d, err := Open("Slow", path, Options{Create: true, Size: 1 << 20, QueueDepth: 1})
	if err != nil {
		t.Fatal(err)
	}
	g := newGatedCalls()
	d.sys.pread = func(fd int, p []byte, off int64) (int, error) { g.enter(); return unix.Pread(fd, p, off) }
	errs := make(chan error, 3)
	for range 3 {
		go func() { errs <- d.ReadAt(make([]byte, 512), 0) }()
	}
	g.waitEntered(t, 1)
	closed := make(chan error, 1)
	go func() { closed <- d.Close() }()
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) while an IO was in a system call", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(g.gate)
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := <-errs; err != nil && !errors.Is(err, bdev.ErrClosed) {
			t.Fatalf("IO racing Close: %v, want success or ErrClosed", err)
		}
	}
	if _, maxSeen, _ := g.counts(); maxSeen != 1 {
		t.Fatalf("%d calls at once with queue depth 1", maxSeen)
	}
}

func TestQueueDepthOption(t *testing.T) {
	path := filepath.Join(t.TempDir(), "disk")
	if _, err := Open("X", path, Options{Create: true, Size: 1 << 20, QueueDepth: -1}); err == nil {
		t.Fatal("negative queue depth accepted")
	}
	d, err := Open("X", path, Options{Create: true, Size: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if cap(d.slots) != DefaultQueueDepth {
		t.Fatalf("default queue depth %d, want %d", cap(d.slots), DefaultQueueDepth)
	}
}
