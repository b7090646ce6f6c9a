package ocf_test

import (
	"testing"

	"blockcache/internal/bdev"
	"blockcache/internal/bdev/errinj"
	"blockcache/internal/ocf"
	"blockcache/internal/ocf/ocftest"
)

// ptCounts returns the pass-through counts by reason, reads and writes.
func ptCounts(co *ocf.Core) (rd, wr [ocf.NumPTReasons]uint64) {
	n := co.Counters()
	return n.ReadPTBy, n.WritePTBy
}

// TestPassThroughReasons produces each reason the engine takes and checks
// that exactly that reason's counter moved, by the number of requests.
func TestPassThroughReasons(t *testing.T) {
	cacheFail := &errinj.Toggle{Injector: errinj.ErrInjected.If(errinj.OfKind(errinj.OpRead))}
	env := ocftest.New(t, ocftest.Options{
		Lines: 64, Mode: ocf.ModeWT, CoreBytes: 8 << 20, SeqCutoff: nil,
		WrapCache: func(d bdev.Device) bdev.Device { return errinj.Wrap(d, cacheFail) },
	})
	c, co := env.Cache, env.Cores[0]
	if err := co.SetSeqCutoff(seqCutoffPolicy(ocf.SeqCutoffNever)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	read := func(off int64) {
		t.Helper()
		if err := co.ReadAt(buf, off); err != nil {
			t.Fatal(err)
		}
	}
	write := func(off int64) {
		t.Helper()
		if err := co.WriteAt(buf, off, false); err != nil {
			t.Fatal(err)
		}
	}
	expect := func(what string, why ocf.PTReason, wantRd, wantWr uint64, do func()) {
		t.Helper()
		rd0, wr0 := ptCounts(co)
		do()
		rd, wr := ptCounts(co)
		for r := range ocf.NumPTReasons {
			dr, dw := rd[r]-rd0[r], wr[r]-wr0[r]
			wantR, wantW := uint64(0), uint64(0)
			if r == why {
				wantR, wantW = wantRd, wantWr
			}
			if dr != wantR || dw != wantW {
				t.Errorf("%s: reason %s counted %d reads, %d writes; want %d, %d", what, r, dr, dw, wantR, wantW)
			}
		}
	}

	expect("cache mode pt", ocf.PTMode, 2, 1, func() {
		if err := c.SetMode(ocf.ModePT, false); err != nil {
			t.Fatal(err)
		}
		read(0)
		read(4096)
		write(0)
	})
	expect("cache mode wa, write miss", ocf.PTMode, 0, 1, func() {
		if err := c.SetMode(ocf.ModeWA, false); err != nil {
			t.Fatal(err)
		}
		write(1 << 20)
	})
	if err := c.SetMode(ocf.ModeWT, false); err != nil {
		t.Fatal(err)
	}
	expect("sequential cutoff", ocf.PTSeqCutoff, 13, 0, func() {
		if err := co.SetSeqCutoff(ocf.SeqCutoffParams{Policy: ocf.SeqCutoffAlways, ThresholdBytes: 16 << 10, PromotionCount: 2}); err != nil {
			t.Fatal(err)
		}
		for i := range 16 {
			read(2<<20 + int64(i)*4096)
		}
		if err := co.SetSeqCutoff(seqCutoffPolicy(ocf.SeqCutoffNever)); err != nil {
			t.Fatal(err)
		}
	})
	expect("promotion refused", ocf.PTPromotion, 2, 0, func() {
		if err := c.SetPromotion(ocf.PromotionParams{Kind: ocf.PromoteNHitKind, InsertionThreshold: 3, TriggerThreshold: 0}); err != nil {
			t.Fatal(err)
		}
		read(3 << 20)
		read(3 << 20)
		if err := c.SetPromotion(ocf.DefaultPromotionParams()); err != nil {
			t.Fatal(err)
		}
	})
	expect("no space: a read larger than the cache", ocf.PTNoSpace, 1, 0, func() {
		big := make([]byte, int64(c.NumLines()+8)*c.LineSize())
		if err := co.ReadAt(big, 4<<20); err != nil {
			t.Fatal(err)
		}
	})
	expect("fallback after cache errors", ocf.PTFallback, 1, 1, func() {
		if err := c.SetFallbackPTThreshold(1); err != nil {
			t.Fatal(err)
		}
		read(5 << 20) // inserts the line
		cacheFail.On()
		read(5 << 20) // a hit whose cache read fails: served from the core, fallback on
		cacheFail.Off()
		if active, _ := c.FallbackPT(); !active {
			t.Fatal("fallback not active after a cache error at threshold 1")
		}
		read(5 << 20)
		write(5 << 20)
	})
	n := co.Counters()
	var sumRd, sumWr uint64
	for r := range ocf.NumPTReasons {
		sumRd += n.ReadPTBy[r]
		sumWr += n.WritePTBy[r]
	}
	if sumRd != n.ReadPT || sumWr != n.WritePT {
		t.Errorf("reasons sum to %d reads, %d writes; pass-through counts %d, %d", sumRd, sumWr, n.ReadPT, n.WritePT)
	}
	if n.ReadPTBy[ocf.PTUnaligned]+n.WritePTBy[ocf.PTUnaligned] != 0 {
		t.Error("unaligned counted: the engine caches every IO a volume accepts")
	}
}

// TestResetStatsKeepsCounters: ResetStats zeroes Stats, not Counters, and
// Stats counts again from there.
func TestResetStatsKeepsCounters(t *testing.T) {
	env := ocftest.New(t, ocftest.Options{Lines: 64, Mode: ocf.ModeWT})
	co := env.Cores[0]
	buf := make([]byte, 4096)
	for range 3 {
		if err := co.ReadAt(buf, 0); err != nil { // a miss, then hits
			t.Fatal(err)
		}
	}
	before := co.Counters()
	if before.ReadFullMisses != 1 || before.ReadHits != 2 || before.VolumeReadBytes != 3*4096 || before.CoreReadBytes != 4096 {
		t.Fatalf("counters after a miss and two hits: %+v", before)
	}
	co.ResetStats()
	if s := co.Stats(); s.Requests.Total != 0 || s.Blocks.VolumeRd != 0 {
		t.Fatalf("stats after reset: %+v", s)
	}
	if err := co.ReadAt(buf, 0); err != nil {
		t.Fatal(err)
	}
	after := co.Counters()
	if after.ReadHits != 3 || after.VolumeReadBytes != 4*4096 {
		t.Errorf("counters went back with the reset: %+v", after)
	}
	if s := co.Stats(); s.Requests.RdHits != 1 || s.Requests.Total != 1 || s.Blocks.VolumeRd != 1 || s.Blocks.CacheRd != 1 {
		t.Errorf("stats after reset and one hit: %+v", s)
	}
	if d := after.Sub(before); d.ReadHits != 1 || d.ReadFullMisses != 0 {
		t.Errorf("Sub: %+v", d)
	}
}

// TestLatencyHistograms: hits, misses and writes land in their own
// histogram, one count per request, through every entry point.
func TestLatencyHistograms(t *testing.T) {
	env := ocftest.New(t, ocftest.Options{Lines: 64, Mode: ocf.ModeWT})
	co := env.Cores[0]
	buf := make([]byte, 8192)
	if err := co.ReadAt(buf, 0); err != nil { // full miss of two lines
		t.Fatal(err)
	}
	if err := co.ReadAt(buf, 0); err != nil { // a two-line hit: the general path
		t.Fatal(err)
	}
	if err := co.ReadAt(buf[:4096], 0); err != nil { // the hit path
		t.Fatal(err)
	}
	if ok, err := co.TryReadAt(buf[:4096], 4096); !ok || err != nil {
		t.Fatalf("TryReadAt of a hit: %v %v", ok, err)
	}
	if err := co.WriteAt(buf, 0, false); err != nil {
		t.Fatal(err)
	}
	l := co.Latency()
	if h, m, w := l.ReadHit.Count(), l.ReadMiss.Count(), l.Write.Count(); h != 3 || m != 1 || w != 1 {
		t.Errorf("histogram counts: read hit %d, read miss %d, write %d; want 3, 1, 1", h, m, w)
	}
	if l.ReadMiss.Sum <= 0 || l.Write.Sum <= 0 {
		t.Errorf("sums: %+v", l)
	}
}
