package metrics

import (
	"strings"
	"testing"
	"unicode/utf8"

	dto "github.com/prometheus/client_model/go"
)

// TestInvalidUTF8Labels: a name that is not UTF-8 (an INI config can hold
// any bytes) becomes a valid label value instead of a failed scrape.
func TestInvalidUTF8Labels(t *testing.T) {
	m := gauge(descOccupancy, 1, "vol\xff", "cache", "core")
	var out dto.Metric
	if err := m.Write(&out); err != nil {
		t.Fatalf("metric with a non-UTF-8 label: %v", err)
	}
	for _, l := range out.Label {
		if !utf8.ValidString(l.GetValue()) {
			t.Errorf("label %s=%q is not UTF-8", l.GetName(), l.GetValue())
		}
	}
	if got := out.Label[len(out.Label)-1].GetValue(); !strings.HasPrefix(got, "vol") {
		t.Errorf("volume label %q", got)
	}
	h := histogram(descExportLatency, Histogram{Counts: []uint64{1, 2}}, []float64{0.1}, "e\xfe", "read")
	if err := h.Write(&out); err != nil {
		t.Fatalf("histogram with a non-UTF-8 label: %v", err)
	}
	if out.Histogram.GetSampleCount() != 3 || out.Histogram.Bucket[0].GetCumulativeCount() != 1 {
		t.Errorf("histogram: %v", out.Histogram)
	}
}
