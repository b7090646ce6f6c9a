package main

import (
	"fmt"
	"io"

	"blockcache/internal/bdev"
	"blockcache/internal/ocf"
	"blockcache/internal/perf"
)

// volumeRequests returns the request counts of every cache volume among
// devs, by name.
func (p *perfBdevs) volumeRequests(devs []bdev.Device) map[string]ocf.RequestStats {
	out := map[string]ocf.RequestStats{}
	for _, d := range devs {
		name := d.Info().Name
		if st, err := p.ocf.Stats(name); err == nil {
			out[name] = st.Requests
		}
	}
	return out
}

// hitRatio is the share of a volume's requests over the run that hit:
// hits over every request, pass-through ones included.
type hitRatio struct {
	reads, readHits, writes, writeHits uint64
}

func ratioBetween(before, after ocf.RequestStats) hitRatio {
	return hitRatio{
		reads:     (after.RdTotal + after.RdPT) - (before.RdTotal + before.RdPT),
		readHits:  after.RdHits - before.RdHits,
		writes:    (after.WrTotal + after.WrPT) - (before.WrTotal + before.WrPT),
		writeHits: after.WrHits - before.WrHits,
	}
}

func percentOf(n, of uint64) float64 { return 100 * float64(n) / float64(of) }

// addHitRatios gives each result of a cache volume the volume's read and
// write hit percentages over the run (ocf_read_hit_pct,
// ocf_write_hit_pct, each with a count), and writes one line per volume
// on w (nil: none). With -C several jobs share a volume and its figures.
func addHitRatios(w io.Writer, results []*perf.Result, before, after map[string]ocf.RequestStats) {
	said := map[string]bool{}
	for _, r := range results {
		b, ok := before[r.Job]
		if !ok {
			continue
		}
		h := ratioBetween(b, after[r.Job])
		r.Extra = map[string]float64{"ocf_reads": float64(h.reads), "ocf_writes": float64(h.writes)}
		line := fmt.Sprintf(" OCF %s over the run:", r.Job)
		if h.reads > 0 {
			r.Extra["ocf_read_hit_pct"] = percentOf(h.readHits, h.reads)
			line += fmt.Sprintf(" read hits %.2f%% of %d reads", percentOf(h.readHits, h.reads), h.reads)
		}
		if h.writes > 0 {
			r.Extra["ocf_write_hit_pct"] = percentOf(h.writeHits, h.writes)
			line += fmt.Sprintf(" write hits %.2f%% of %d writes", percentOf(h.writeHits, h.writes), h.writes)
		}
		if w != nil && !said[r.Job] && h.reads+h.writes > 0 {
			said[r.Job] = true
			fmt.Fprintln(w, line)
		}
	}
}
