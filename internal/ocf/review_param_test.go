package ocf_test

import (
	"errors"
	"testing"

	"blockcache/internal/ocf"
)

// TestSeqCutoffThresholdErrorNamesValue: a threshold above 4 GiB is
// reported with the value given, not with a value clamped to just above
// the range (8 GiB was reported as 4 GiB + 1 byte, which the RPC layer
// then showed as 4194305 KiB).
func TestSeqCutoffThresholdErrorNamesValue(t *testing.T) {
	for _, v := range []uint64{4<<30 + 1, 8 << 30, 1 << 62, 1<<64 - 1} {
		p := ocf.DefaultSeqCutoffParams()
		p.ThresholdBytes = v
		var pe *ocf.ParamError
		if err := p.Validate(); !errors.As(err, &pe) {
			t.Fatalf("threshold %d: %v, want a *ParamError", v, err)
		}
		want := int64(min(v, 1<<63-1))
		if pe.Param != "threshold" || pe.Value != want || pe.Max != 4<<30 {
			t.Errorf("threshold %d: %+v, want threshold %d (max %d)", v, *pe, want, int64(4<<30))
		}
	}
}
