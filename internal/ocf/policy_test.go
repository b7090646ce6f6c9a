package ocf_test

import (
	"errors"
	"fmt"
	"testing"

	"blockcache/internal/ocf"
	"blockcache/internal/ocf/ocftest"
)

// TestNHitPromotion: above the trigger occupancy a line is inserted on its
// N-th access only; below it every miss is inserted.
func TestNHitPromotion(t *testing.T) {
	env := ocftest.New(t, ocftest.Options{Lines: 16, Mode: ocf.ModeWT, CoreBytes: 1 << 20})
	c, co := env.Cache, env.Cores[0]
	for _, bad := range []ocf.PromotionParams{
		{Kind: ocf.PromoteNHitKind, InsertionThreshold: 1, TriggerThreshold: 80},
		{Kind: ocf.PromoteNHitKind, InsertionThreshold: 1001, TriggerThreshold: 80},
		{Kind: ocf.PromoteNHitKind, InsertionThreshold: 3, TriggerThreshold: 101},
		{Kind: ocf.PromoteNHitKind}, // 0 is a value, not the default
	} {
		if err := c.SetPromotion(bad); !errors.Is(err, ocf.ErrInvalidConfig) {
			t.Errorf("SetPromotion(%+v): %v, want ErrInvalidConfig", bad, err)
		}
	}
	if err := c.SetPromotion(ocf.PromotionParams{Kind: ocf.PromoteNHitKind, InsertionThreshold: 3, TriggerThreshold: 0}); err != nil {
		t.Fatal(err)
	}
	occ := func() uint64 { return c.Stats().Usage.Occupancy }
	buf := make([]byte, 4096)
	for access := 1; access <= 3; access++ {
		if err := co.ReadAt(buf, 0); err != nil {
			t.Fatal(err)
		}
		if got, want := occ(), uint64(0); access < 3 && got != want {
			t.Fatalf("access %d: occupancy %d, want nothing inserted yet", access, got)
		}
	}
	if occ() != 1 {
		t.Fatalf("occupancy %d after the 3rd access, want the line inserted", occ())
	}
	if s := c.Stats().Requests; s.RdPT != 2 || s.RdFullMisses != 1 {
		t.Errorf("requests %+v: want the two refused misses as rd_pt and one full miss", s)
	}
	// Below the trigger (80% by default), every miss is inserted.
	nhit := ocf.DefaultPromotionParams()
	nhit.Kind = ocf.PromoteNHitKind
	if err := c.SetPromotion(nhit); err != nil {
		t.Fatal(err)
	}
	if err := co.ReadAt(buf, 8192); err != nil {
		t.Fatal(err)
	}
	if occ() != 2 {
		t.Fatalf("occupancy %d: below the trigger a first access must insert", occ())
	}
	if p := c.Promotion(); p.Kind != ocf.PromoteNHitKind || p.InsertionThreshold != 3 || p.TriggerThreshold != 80 {
		t.Errorf("promotion params %+v", p)
	}
}

// TestSeqCutoff: the requests of a sequential stream from the one that
// takes it to the threshold on bypass the cache while random IO does not;
// "full" only cuts off when the cache is full, "never" never.
func TestSeqCutoff(t *testing.T) {
	env := ocftest.New(t, ocftest.Options{Lines: 64, Mode: ocf.ModeWT, CoreBytes: 4 << 20})
	c, co := env.Cache, env.Cores[0]
	if err := co.SetSeqCutoff(ocf.SeqCutoffParams{Policy: ocf.SeqCutoffAlways, ThresholdBytes: 16 << 10, PromotionCount: 2}); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	for i := range 16 { // a 64 KiB sequential read in 4 KiB requests
		if err := co.ReadAt(buf, int64(i)*4096); err != nil {
			t.Fatal(err)
		}
	}
	s := c.Stats()
	if s.Requests.RdPT != 13 || s.Usage.Occupancy != 3 {
		t.Fatalf("sequential stream: rd_pt %d, occupancy %d; want the first 16 KiB inserted, the other 13 requests cut off",
			s.Requests.RdPT, s.Usage.Occupancy)
	}
	co.ResetStats()
	for _, line := range []int64{700, 40, 333, 901, 77} { // random reads
		if err := co.ReadAt(buf, line*4096); err != nil {
			t.Fatal(err)
		}
	}
	if s := c.Stats().Requests; s.RdPT != 0 {
		t.Errorf("random reads cut off: %+v", s)
	}
	// "full": the cache (64 lines) is below 512 + request free lines, so
	// it counts as full and streams are cut off; "never" never cuts off.
	for _, tc := range []struct {
		policy ocf.SeqCutoffPolicy
		wantPT uint64
	}{{ocf.SeqCutoffFull, 13}, {ocf.SeqCutoffNever, 0}} {
		if err := co.SetSeqCutoff(ocf.SeqCutoffParams{Policy: tc.policy, ThresholdBytes: 16 << 10, PromotionCount: 2}); err != nil {
			t.Fatal(err)
		}
		co.ResetStats()
		base := int64(2 << 20)
		for i := range 16 {
			if err := co.ReadAt(buf, base+int64(i)*4096); err != nil {
				t.Fatal(err)
			}
		}
		if got := c.Stats().Requests.RdPT; got != tc.wantPT {
			t.Errorf("policy %s: rd_pt %d, want %d", tc.policy, got, tc.wantPT)
		}
	}
	if _, err := ocf.ParseSeqCutoffPolicy("sometimes"); !errors.Is(err, ocf.ErrInvalidConfig) {
		t.Errorf("bad policy name: %v", err)
	}
	if p := co.SeqCutoff(); p.Policy != ocf.SeqCutoffNever || p.ThresholdBytes != 16<<10 {
		t.Errorf("seq cutoff params %+v", p)
	}
}

// TestSeqCutoffDefaultsAsSPDK: a new core has OCF's library defaults (full,
// 1 KiB, 8), so the second request of any stream goes pass-through when the
// cache is full, that is when at most 512 + 1 lines are free (OCF's <=), as
// on SPDK's OCF bdev; nothing is cut off in a cache with room.
func TestSeqCutoffDefaultsAsSPDK(t *testing.T) {
	for _, lines := range []int{16, 514, 515, 1024} {
		t.Run(fmt.Sprintf("%d lines", lines), func(t *testing.T) {
			env := ocftest.New(t, ocftest.Options{Lines: lines, Mode: ocf.ModeWT, CoreBytes: 1 << 20})
			if n := env.Cache.NumLines(); n != lines {
				t.Fatalf("cache of %d lines, want %d", n, lines)
			}
			co := env.Cores[0]
			if got, want := co.SeqCutoff(), (ocf.SeqCutoffParams{Policy: ocf.SeqCutoffFull, ThresholdBytes: 1024, PromotionCount: 8}); got != want {
				t.Fatalf("new core's sequential cutoff %+v, want %+v", got, want)
			}
			buf := make([]byte, 4096)
			occupied := 0
			for _, step := range []struct {
				write, second bool
				off           int64
			}{{true, false, 0}, {true, true, 4096}, {false, false, 65536}, {false, true, 69632}} {
				cut := step.second && lines-occupied <= 512+1
				if !cut {
					occupied++ // a miss, inserted
				}
				co.ResetStats()
				op, err := "read", error(nil)
				if step.write {
					op, err = "write", co.WriteAt(buf, step.off, false)
				} else {
					err = co.ReadAt(buf, step.off)
				}
				if err != nil {
					t.Fatal(err)
				}
				r := co.Stats().Requests
				if got := r.RdPT+r.WrPT == 1; got != cut {
					t.Errorf("%s at %d: counted %+v, want cut off %v", op, step.off, r, cut)
				}
			}
			if want := uint64(occupied); env.Cache.Stats().Usage.Occupancy != want {
				t.Errorf("occupancy %d, want %d", env.Cache.Stats().Usage.Occupancy, want)
			}
		})
	}
}
