package ocf

import (
	"math"
	"testing"

	"github.com/google/uuid"

	"blockcache/internal/bdev"
	"blockcache/internal/bdev/malloc"
	"blockcache/internal/ocf/metadata"
)

// seqStep is one request given to a stream table and whether it must be
// reported sequential.
type seqStep struct {
	off, length int64
	write       bool
	want        bool
}

func runSeqSteps(t *testing.T, p SeqCutoffParams, steps []seqStep) {
	t.Helper()
	d := newSeqDetector(p)
	for i, s := range steps {
		got, policy := d.observe(s.off, s.length, s.write)
		if got != s.want || policy != p.Policy {
			t.Errorf("step %d: observe(%d, %d, write %v) = %v, %s; want %v, %s", i, s.off, s.length, s.write, got, policy, s.want, p.Policy)
		}
	}
}

// TestSeqCutoffAtThreshold: a request continuing a stream is sequential
// exactly when the stream's bytes plus its own reach the threshold: 1023
// bytes are not enough for 1024, 1024 are.
func TestSeqCutoffAtThreshold(t *testing.T) {
	p := SeqCutoffParams{Policy: SeqCutoffAlways, ThresholdBytes: 1024, PromotionCount: 8}
	runSeqSteps(t, p, []seqStep{
		{0, 511, false, false},   // starts a stream of 511 bytes
		{511, 512, false, false}, // 1023: below
		{1023, 1, false, true},   // 1024: reached
		{1024, 512, false, true}, // and beyond
	})
	runSeqSteps(t, SeqCutoffParams{Policy: SeqCutoffAlways, ThresholdBytes: 1025, PromotionCount: 8}, []seqStep{
		{0, 512, true, false},
		{512, 512, true, false}, // 1024 < 1025
		{1024, 512, true, true},
	})
}

// TestSeqCutoffStreamStart: the request that starts a stream is never cut
// off, however large; a stream is continued only by a request that starts
// where it ended, in its direction.
func TestSeqCutoffStreamStart(t *testing.T) {
	p := SeqCutoffParams{Policy: SeqCutoffAlways, ThresholdBytes: 1024, PromotionCount: 8}
	runSeqSteps(t, p, []seqStep{
		{0, 1 << 20, false, false},        // alone past the threshold: a new stream
		{1 << 20, 4096, true, false},      // a write where a read stream ended
		{1<<20 + 512, 4096, false, false}, // a read that skips a sector
		{1 << 20, 512, false, true},       // the read stream, continued
		{1<<20 + 4096, 4096, true, true},  // the write stream, continued
	})
}

// TestSeqCutoffPromotionCountNoGate: the promotion count does not hold back
// the cut: with any count, a stream's second request that reaches the
// threshold is sequential.
func TestSeqCutoffPromotionCountNoGate(t *testing.T) {
	for _, count := range []uint32{1, 2, DefaultSeqCutoffParams().PromotionCount, maxSeqCutoffPromotionCount} {
		runSeqSteps(t, SeqCutoffParams{Policy: SeqCutoffAlways, ThresholdBytes: 8192, PromotionCount: count}, []seqStep{
			{0, 4096, false, false},
			{4096, 4096, false, true},
		})
	}
}

// TestSeqCutoffDefaultParams: the defaults are OCF's library defaults,
// zero parameters are refused rather than defaulted, and the policy
// numbers stay those on disk.
func TestSeqCutoffDefaultParams(t *testing.T) {
	if p, want := DefaultSeqCutoffParams(), (SeqCutoffParams{Policy: SeqCutoffFull, ThresholdBytes: 1024, PromotionCount: 8}); p != want {
		t.Errorf("defaults %+v, want %+v", p, want)
	}
	if err := (SeqCutoffParams{}).Validate(); err == nil {
		t.Error("zero parameters accepted")
	}
	if SeqCutoffFull != 0 || SeqCutoffAlways != 1 || SeqCutoffNever != 2 {
		t.Error("sequential cutoff policy numbers changed; they are stored on disk")
	}
}

// TestRecordedSeqCutoff: a core record's values are kept as recorded; a 0
// threshold, which only records from before the 1 KiB default hold, is the
// 1 MiB it meant then; a 0 promotion count is 8, then as now.
func TestRecordedSeqCutoff(t *testing.T) {
	for _, tc := range []struct {
		policy           uint8
		threshold, count uint32
		want             SeqCutoffParams
	}{
		{0, 0, 0, SeqCutoffParams{SeqCutoffFull, 1 << 20, 8}},
		{1, 0, 3, SeqCutoffParams{SeqCutoffAlways, 1 << 20, 3}},
		{0, 1 << 20, 8, SeqCutoffParams{SeqCutoffFull, 1 << 20, 8}},
		{2, 1024, 8, SeqCutoffParams{SeqCutoffNever, 1024, 8}},
		{1, math.MaxUint32, 8, SeqCutoffParams{SeqCutoffAlways, 4 << 30, 8}}, // 4 GiB as recordThreshold stores it
	} {
		rec := metadata.CoreRecord{ID: 1, CoreName: "core", SeqCutoff: tc.policy, SeqThreshold: tc.threshold, SeqPromotionCount: tc.count}
		got, err := recordedSeqCutoff(rec)
		if err != nil || got != tc.want {
			t.Errorf("record (%d, %d, %d): %+v, %v; want %+v", tc.policy, tc.threshold, tc.count, got, err, tc.want)
		}
	}
	if got := recordThreshold(4 << 30); got != math.MaxUint32 {
		t.Errorf("4 GiB recorded as %d, want 4 GiB less a byte", got)
	}
	if _, err := recordedSeqCutoff(metadata.CoreRecord{ID: 3, CoreName: "bad", SeqCutoff: 9}); err == nil {
		t.Error("record with policy 9 accepted")
	}
}

// TestLoadKeepsRecordedSeqCutoff: a cache whose metadata records a core
// with a 0 threshold (the old default) loads it as 1 MiB, while a core
// added new gets 1 KiB, and both keep those across another load.
func TestLoadKeepsRecordedSeqCutoff(t *testing.T) {
	newDev := func(name string, bytes int64) *malloc.Device {
		d, err := malloc.New(name, uuid.Nil, 512, uint64(bytes/512))
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	cacheDev := newDev("cache", DeviceBytesFor(16, DefaultLineSize))
	cores := []*malloc.Device{newDev("old", 1<<20), newDev("new", 1<<20)}
	attach := func(c *Cache, id int) *Core {
		t.Helper()
		co, err := c.AddCore(CoreConfig{ID: CoreID(id), Device: cores[id], Volume: bdev.Info{Name: cores[id].Info().Name + "-vol"}})
		if err != nil {
			t.Fatal(err)
		}
		return co
	}
	stop := func(c *Cache, cos ...*Core) {
		t.Helper()
		for _, co := range cos {
			if err := c.RemoveCore(co, false); err != nil {
				t.Fatal(err)
			}
		}
		if err := c.Stop(); err != nil {
			t.Fatal(err)
		}
	}

	c, err := New(cacheDev, Config{})
	if err != nil {
		t.Fatal(err)
	}
	old := attach(c, 0)
	// What the metadata of a core added before the 1 KiB default may say.
	c.mu.Lock()
	old.record.SeqThreshold, old.record.SeqPromotionCount = 0, 0
	c.mu.Unlock()
	c.settings.Lock()
	err = c.writeSuperblock(false)
	c.settings.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	stop(c, old)

	for round := range 2 {
		c, _, err := Load(cacheDev, Config{})
		if err != nil {
			t.Fatalf("round %d: load: %v", round, err)
		}
		old, added := attach(c, 0), attach(c, 1)
		if got, want := old.SeqCutoff(), (SeqCutoffParams{SeqCutoffFull, 1 << 20, 8}); got != want {
			t.Errorf("round %d: recorded core: %+v, want %+v", round, got, want)
		}
		if got, want := added.SeqCutoff(), (SeqCutoffParams{SeqCutoffFull, 1024, 8}); got != want {
			t.Errorf("round %d: core added to a loaded cache: %+v, want %+v", round, got, want)
		}
		if old.record.SeqThreshold != 1<<20 {
			t.Errorf("round %d: recorded core's record now holds %d, want 1 MiB written out", round, old.record.SeqThreshold)
		}
		stop(c, old, added)
	}
}
