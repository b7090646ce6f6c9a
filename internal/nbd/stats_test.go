package nbd

import (
	"testing"
	"time"

	"blockcache/internal/bdev/bdevtest"
	"blockcache/internal/latency"
	"blockcache/internal/nbd/nbdclient"
)

// TestExportStats: each executed request is timed once in its op's
// histogram, a slow device lands in the upper buckets, and connections and
// executing requests are counted while they last.
func TestExportStats(t *testing.T) {
	const slow = 3 * time.Millisecond
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	dev := &hookDevice{Device: bdevtest.NewMalloc(t, "m0", 2048)}
	dev.hook = func(op string, off, n int64) error {
		switch {
		case op == "write" && off == 0:
			time.Sleep(slow)
		case op == "read" && off == 4096:
			entered <- struct{}{}
			<-release
		}
		return nil
	}
	ts := startServer(t, Export{Name: "e", Device: dev})
	c := ts.dial(t, nbdclient.Options{Export: "e"})
	buf := make([]byte, 4096)
	for range 3 {
		if err := c.ReadAt(buf, 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.WriteAt(buf, 0, 0); err != nil {
		t.Fatal(err)
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}

	done := make(chan error, 1)
	go func() { done <- c.ReadAt(buf, 4096) }()
	<-entered
	st := ts.ExportStats()
	if len(st) != 1 || st[0].Name != "e" || st[0].Connections != 1 || st[0].Executing != 1 {
		t.Errorf("while a read blocks in the device: %+v", st)
	}
	if n := ts.Connections(); n != 1 {
		t.Errorf("Connections() = %d, want 1", n)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	st = ts.ExportStats()
	lat := st[0].Latency
	if r, w, o := lat[OpRead].Count(), lat[OpWrite].Count(), lat[OpOther].Count(); r != 4 || w != 1 || o != 1 || st[0].Executing != 0 {
		t.Fatalf("counts read %d write %d other %d executing %d; want 4 1 1 0", r, w, o, st[0].Executing)
	}
	// The slow write is in a bucket whose bound is at least its delay.
	w := lat[OpWrite]
	for i, n := range w.Counts {
		if n == 0 {
			continue
		}
		if i < latency.NumBuckets && latency.Bound(i) < slow {
			t.Errorf("a %v write counted in the bucket up to %v", slow, latency.Bound(i))
		}
	}
	if w.Sum < slow {
		t.Errorf("write latency sum %v, below the device's %v", w.Sum, slow)
	}
}
