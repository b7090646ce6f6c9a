package ocf_test

import (
	"errors"
	"testing"

	"blockcache/internal/ocf"
)

// TestFallbackPassThrough: after the configured number of cache errors the
// cache serves pass-through (writes go to the core, nothing is inserted,
// dirty data is still read from the cache) until the threshold is set
// again; the threshold is bounded.
func TestFallbackPassThrough(t *testing.T) {
	f := newFaultEnv(t, ocf.ModeWB)
	c, co := f.Cache, f.co()
	if err := c.SetFallbackPTThreshold(ocf.MaxFallbackPTThreshold + 1); !errors.Is(err, ocf.ErrInvalidConfig) {
		t.Fatalf("threshold above the maximum: %v", err)
	}
	if err := c.SetFallbackPTThreshold(2); err != nil {
		t.Fatal(err)
	}
	volWrite(t, co, tagged('D', 0, 4096), 0, false) // dirty line 0
	volRead(t, co, 4096, 4096)                      // clean line 1
	f.cacheRd.on()
	volRead(t, co, 4096, 4096) // error 1: served from the core
	if active, n := c.FallbackPT(); active || n != 1 {
		t.Fatalf("after one error: active %v, errors %d", active, n)
	}
	volRead(t, co, 4096, 4096) // error 2: threshold reached
	if active, _ := c.FallbackPT(); !active {
		t.Fatal("not in fallback pass-through after 2 cache errors with threshold 2")
	}
	f.cacheRd.off()
	before := c.Stats()
	volWrite(t, co, tagged('E', 8*4096, 4096), 8*4096, false)
	expectBytes(t, "fallback write reached the core", devRead(t, f.CoreDevs[0], 8*4096, 4096), tagged('E', 8*4096, 4096))
	expectBytes(t, "dirty data still read from the cache", volRead(t, co, 0, 4096), tagged('D', 0, 4096))
	after := c.Stats()
	if after.Usage.Occupancy != before.Usage.Occupancy || after.Requests.WrPT != before.Requests.WrPT+1 {
		t.Errorf("fallback write: usage %+v -> %+v, wr_pt %d -> %d; want no insert and one wr_pt",
			before.Usage, after.Usage, before.Requests.WrPT, after.Requests.WrPT)
	}
	if err := c.SetFallbackPTThreshold(2); err != nil {
		t.Fatal(err)
	}
	if active, n := c.FallbackPT(); active || n != 0 {
		t.Fatalf("after setting the threshold again: active %v, errors %d", active, n)
	}
}
