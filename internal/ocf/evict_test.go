package ocf_test

import (
	"bytes"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"blockcache/internal/bdev"
	"blockcache/internal/bdev/bdevtest"
	"blockcache/internal/ocf"
	"blockcache/internal/ocf/ocftest"
)

// gatedCache is a wb cache whose core writes wait at a gate once armed.
func gatedCache(t *testing.T, lines int) (*ocftest.Env, *bdevtest.IOGate, *atomic.Bool) {
	t.Helper()
	var gate *bdevtest.IOGate
	armed := new(atomic.Bool)
	env := ocftest.New(t, ocftest.Options{Lines: lines, Mode: ocf.ModeWB, CoreBytes: 4 << 20, SeqCutoff: ocf.CutoffNever{},
		WrapCore: func(_ int, d bdev.Device) bdev.Device {
			gate = bdevtest.NewIOGate(d, func(write bool, _, _ int64) bool { return write && armed.Load() })
			return gate
		}})
	t.Cleanup(gate.Release)
	return env, gate, armed
}

// fillDirty writes every line of the cache once, so that all are dirty,
// and returns what it wrote (line k at byte k*4096 of the core).
func fillDirty(t *testing.T, env *ocftest.Env) []byte {
	t.Helper()
	n := env.Cache.NumLines()
	data := make([]byte, n*4096)
	for k := range n {
		b := data[k*4096 : (k+1)*4096]
		for i := range b {
			b[i] = byte(k*7 + i/512 + 1)
		}
		if err := env.Cores[0].WriteAt(b, int64(k)*4096, false); err != nil {
			t.Fatal(err)
		}
	}
	if s := env.Cache.Stats(); s.Usage.Dirty != uint64(n) {
		t.Fatalf("after filling: %d of %d lines dirty", s.Usage.Dirty, n)
	}
	return data
}

// TestConcurrentDirtyEvictionsInParallel is the evidence that misses which
// must evict dirty data do not serialize: 16 concurrent write misses on a
// cache full of dirty lines each need a victim written back first, and with
// the core's writes held at a gate at least 8 of those write-backs are in
// flight at once. (Before victims were claimed one by one, the misses all
// chose the same batch and waited for one another: one write at a time.)
func TestConcurrentDirtyEvictionsInParallel(t *testing.T) {
	const misses = 16
	env, gate, armed := gatedCache(t, 64)
	co := env.Cores[0]
	old := fillDirty(t, env)
	n := env.Cache.NumLines()

	armed.Store(true)
	var wg sync.WaitGroup
	errs := make([]error, misses)
	fresh := bytes.Repeat([]byte{0xee}, 4096)
	for k := range misses {
		wg.Go(func() { errs[k] = co.WriteAt(fresh, int64(n+k)*4096, false) })
	}
	parallel := gate.WaitHeld(misses/2, 10*time.Second)
	held := gate.MaxHeld()
	gate.Release()
	wg.Wait()
	if !parallel {
		t.Fatalf("%d concurrent misses on a cache full of dirty data put at most %d core writes in flight at once; want at least %d", misses, held, misses/2)
	}
	for k, err := range errs {
		if err != nil {
			t.Fatalf("miss %d: %v", k, err)
		}
	}
	// Every line reads back: the victims from the core or the cache, the
	// misses' data wherever it went.
	got := make([]byte, len(old))
	if err := co.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, old) {
		t.Fatalf("the lines written before the misses: %s", diffAt(got, old))
	}
	for k := range misses {
		b := make([]byte, 4096)
		if err := co.ReadAt(b, int64(n+k)*4096); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b, fresh) {
			t.Fatalf("miss %d reads back %s", k, diffAt(b, fresh))
		}
	}
	t.Logf("at most %d core writes in flight; stats %+v", held, env.Cache.Stats().Requests)
}

// countWrites counts a device's writes.
type countWrites struct {
	bdev.Device
	n atomic.Int64
}

func (d *countWrites) WriteAt(p []byte, off int64, fua bool) error {
	d.n.Add(1)
	return d.Device.WriteAt(p, off, fua)
}

// TestDirtyEvictionCostsOneCoreWrite: on a cache full of dirty lines with
// no background cleaning, each write miss writes back one victim, a single
// core write, and then inserts its data: never a batch of write-backs
// behind one miss, and never the victim's write plus a pass-through.
func TestDirtyEvictionCostsOneCoreWrite(t *testing.T) {
	var core *countWrites
	env := ocftest.New(t, ocftest.Options{Lines: 64, Mode: ocf.ModeWB, CoreBytes: 4 << 20, SeqCutoff: ocf.CutoffNever{},
		WrapCore: func(_ int, d bdev.Device) bdev.Device { core = &countWrites{Device: d}; return core }})
	co := env.Cores[0]
	fillDirty(t, env)
	n := env.Cache.NumLines()
	fresh := bytes.Repeat([]byte{0x5a}, 4096)
	for k := range 2 * n {
		before := core.n.Load()
		off := int64(n+k) * 4096
		if err := co.WriteAt(fresh, off, false); err != nil {
			t.Fatal(err)
		}
		if w := core.n.Load() - before; w != 1 {
			t.Fatalf("miss %d on a cache full of dirty lines made %d core writes, want 1 (its victim)", k, w)
		}
		for _, s := range co.SectorStates(off, 4096) {
			if !s.Valid || !s.Dirty {
				t.Fatalf("miss %d: its data is not in the cache as dirty (%+v): it went around", k, s)
			}
		}
	}
	if s := env.Cache.Stats(); s.Requests.WrPT != 0 || s.Usage.Dirty != uint64(n) {
		t.Fatalf("after %d misses: wr_pt %d, dirty %d of %d lines", 2*n, s.Requests.WrPT, s.Usage.Dirty, n)
	}
}
