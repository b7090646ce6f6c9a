package ocf_test

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"blockcache/internal/bdev"
	"blockcache/internal/bdev/malloc"
	"blockcache/internal/ocf"
)

// fakeClock is a Clock the test moves by hand.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (f *fakeClock) Now() time.Time { f.mu.Lock(); defer f.mu.Unlock(); return f.now }
func (f *fakeClock) add(d time.Duration) time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = f.now.Add(d)
	return f.now
}

func cleanerCache(t *testing.T, clk *fakeClock, p ocf.CleaningParams) (*ocf.Cache, *ocf.Core) {
	t.Helper()
	cdev, err := malloc.New("cache", uuid.Nil, 512, uint64(ocf.DeviceBytesFor(256, 4096)/512))
	if err != nil {
		t.Fatal(err)
	}
	// No sequential cutoff: with 256 lines the cache is always "full" for
	// OCF's default (fewer than 512 free lines), which would send every
	// write continuing the last one around the cache.
	c, err := ocf.New(cdev, ocf.Config{Mode: ocf.ModeWB, Clock: clk, Cleaning: &p, SeqCutoff: ocf.CutoffNever{}})
	if err != nil {
		t.Fatal(err)
	}
	core, err := malloc.New("core", uuid.Nil, 512, (256<<20)/512)
	if err != nil {
		t.Fatal(err)
	}
	co, err := c.AddCore(ocf.CoreConfig{Device: core, Volume: bdev.Info{Name: "vol"}})
	if err != nil {
		t.Fatal(err)
	}
	return c, co
}

func dirtyLines(c *ocf.Cache) uint64 { return c.Stats().Usage.Dirty }

func writeLines(t *testing.T, co *ocf.Core, offs ...int64) {
	t.Helper()
	for _, off := range offs {
		if err := co.WriteAt(make([]byte, 4096), off, false); err != nil {
			t.Fatal(err)
		}
	}
}

// TestALRU: alru cleans only after the cache was idle for the activity
// threshold, only lines dirty for the staleness time, oldest first, at most
// flush_max_buffers a round.
func TestALRU(t *testing.T) {
	clk := &fakeClock{now: time.Unix(1000, 0)}
	p := ocf.DefaultCleaningParams()
	p.ALRU = ocf.ALRUParams{WakeUp: 5 * time.Second, StalenessTime: 60 * time.Second, FlushMaxBuffers: 2, ActivityThreshold: 10 * time.Second,
		MaxDirtyRatio: 100}
	c, co := cleanerCache(t, clk, p)
	writeLines(t, co, 0, 4096, 8192) // dirty at t=0
	clk.add(50 * time.Second)
	writeLines(t, co, 12288) // dirty at t=50

	now := clk.Now()
	if n, next, _ := c.CleanStep(now); n != 0 || next != 10*time.Second {
		t.Fatalf("busy cache: cleaned %d, next %v; want nothing until 10 s idle", n, next)
	}
	now = clk.add(10 * time.Second) // idle 10 s, first lines dirty 60 s
	n, next, err := c.CleanStep(now)
	if err != nil || n != 2 || next != 5*time.Second || dirtyLines(c) != 2 {
		t.Fatalf("idle, stale: cleaned %d (err %v), next %v, dirty %d; want 2 cleaned (flush_max_buffers), next in 5 s", n, err, next, dirtyLines(c))
	}
	n, _, _ = c.CleanStep(clk.add(5 * time.Second))
	if n != 1 || dirtyLines(c) != 1 {
		t.Fatalf("second round: cleaned %d, dirty %d; want the last stale line only", n, dirtyLines(c))
	}
	if n, _, _ = c.CleanStep(clk.add(5 * time.Second)); n != 0 {
		t.Fatalf("line dirty for 20 s cleaned with staleness 60 s")
	}
	if n, _, _ = c.CleanStep(clk.add(40 * time.Second)); n != 1 || dirtyLines(c) != 0 {
		t.Fatalf("after 60 s: cleaned %d, dirty %d", n, dirtyLines(c))
	}
}

// TestACP: acp cleans continuously, without waiting for idleness, the chunk
// with the most dirty lines first.
func TestACP(t *testing.T) {
	clk := &fakeClock{now: time.Unix(1000, 0)}
	p := ocf.DefaultCleaningParams()
	p.Kind, p.ACP.FlushMaxBuffers = ocf.CleanACP, 8
	c, co := cleanerCache(t, clk, p)
	writeLines(t, co, 0)                                   // chunk 0: 1 line
	writeLines(t, co, 100<<20, 100<<20+4096, 100<<20+8192) // chunk 1: 3 lines
	n, next, err := c.CleanStep(clk.Now())
	if err != nil || n != 3 || next != 10*time.Millisecond {
		t.Fatalf("acp: cleaned %d (err %v), next %v; want chunk 1's 3 lines now, again in 10 ms", n, err, next)
	}
	if n, _, _ := c.CleanStep(clk.Now()); n != 1 || dirtyLines(c) != 0 {
		t.Fatalf("acp second round: cleaned %d, dirty %d", n, dirtyLines(c))
	}
}

// TestNOP: nop never cleans in the background; the policy can change at
// run time and bad parameters are refused naming the parameter.
func TestNOP(t *testing.T) {
	clk := &fakeClock{now: time.Unix(1000, 0)}
	p := ocf.DefaultCleaningParams()
	p.Kind = ocf.CleanNOP
	c, co := cleanerCache(t, clk, p)
	writeLines(t, co, 0, 4096)
	for range 5 {
		if n, _, _ := c.CleanStep(clk.add(time.Hour)); n != 0 {
			t.Fatal("nop cleaned")
		}
	}
	bad := ocf.DefaultCleaningParams()
	bad.ALRU.StalenessTime = 0
	if err := c.SetCleaning(bad); !errors.Is(err, ocf.ErrInvalidConfig) || !contains(err.Error(), "cleaning alru: staleness_time 0 s") {
		t.Fatalf("staleness 0: %v", err)
	}
	bad = ocf.DefaultCleaningParams()
	bad.ACP.FlushMaxBuffers = 10001
	if err := c.SetCleaning(bad); !errors.Is(err, ocf.ErrInvalidConfig) || !contains(err.Error(), "cleaning acp: flush_max_buffers 10001") {
		t.Fatalf("acp flush_max_buffers 10001: %v", err)
	}
	p.Kind = ocf.CleanACP
	if err := c.SetCleaning(p); err != nil {
		t.Fatal(err)
	}
	if n, _, _ := c.CleanStep(clk.Now()); n != 2 {
		t.Fatalf("after switching to acp: cleaned %d", n)
	}
}

// TestBackgroundCleaner: the goroutine cleans on its own with the real
// clock and stops with the cache.
func TestBackgroundCleaner(t *testing.T) {
	p := ocf.DefaultCleaningParams()
	p.Kind, p.ACP.WakeUp = ocf.CleanACP, time.Millisecond
	cdev, _ := malloc.New("cache", uuid.Nil, 512, uint64(ocf.DeviceBytesFor(64, 4096)/512))
	c, err := ocf.New(cdev, ocf.Config{Mode: ocf.ModeWB, Cleaning: &p})
	if err != nil {
		t.Fatal(err)
	}
	core, _ := malloc.New("core", uuid.Nil, 512, 2048)
	co, err := c.AddCore(ocf.CoreConfig{Device: core, Volume: bdev.Info{Name: "vol"}})
	if err != nil {
		t.Fatal(err)
	}
	writeLines(t, co, 0, 4096, 8192)
	c.StartCleaner()
	deadline := time.Now().Add(10 * time.Second)
	for dirtyLines(c) != 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if dirtyLines(c) != 0 {
		t.Fatal("background acp cleaner did not clean within 10 s")
	}
	if err := c.RemoveCore(co, false); err != nil {
		t.Fatal(err)
	}
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
}

func contains(s, sub string) bool {
	return len(sub) == 0 || (len(s) >= len(sub) && indexOf(s, sub) >= 0)
}

func indexOf(s, sub string) int {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return i
		}
	}
	return -1
}
