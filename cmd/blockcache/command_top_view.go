package main

import (
	"cmp"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"blockcache/internal/latency"
	"blockcache/internal/metrics"
)

// topRow is one volume's line in blockcache top: rates over the interval
// between two blockcache_get_metrics snapshots, and gauges from the newer.
type topRow struct {
	name, state          string
	readIOPS, writeIOPS  float64
	readMiBs, writeMiBs  float64
	hitPct               float64 // read hits over reads in the interval; -1 without reads
	dirtyBytes, occBytes uint64
	occPct               float64 // of the cache's capacity
	cleanMiBs            float64 // written back per second
	ptPerSec             float64
	ptByReason           map[string]float64 // per second, non-zero ones only
	rdP50, rdP99, wrP99  time.Duration      // 0: no IO; -1: beyond the last bucket
	readHitsPS, readsPS  float64
}

// topColumns are the table's columns, with the key that sorts by each.
var topColumns = []struct {
	title string
	key   rune
	less  func(a, b *topRow) int // ascending; the table shows descending but for name
}{
	{"VOLUME", 'n', func(a, b *topRow) int { return strings.Compare(a.name, b.name) }},
	{"STATE", 0, nil},
	{"R IOPS", 'r', func(a, b *topRow) int { return cmp.Compare(a.readIOPS, b.readIOPS) }},
	{"W IOPS", 'w', func(a, b *topRow) int { return cmp.Compare(a.writeIOPS, b.writeIOPS) }},
	{"R MiB/s", 'R', func(a, b *topRow) int { return cmp.Compare(a.readMiBs, b.readMiBs) }},
	{"W MiB/s", 'W', func(a, b *topRow) int { return cmp.Compare(a.writeMiBs, b.writeMiBs) }},
	{"HIT%", 'h', func(a, b *topRow) int { return cmp.Compare(a.hitPct, b.hitPct) }},
	{"DIRTY", 'd', func(a, b *topRow) int { return cmp.Compare(a.dirtyBytes, b.dirtyBytes) }},
	{"OCC%", 'o', func(a, b *topRow) int { return cmp.Compare(a.occPct, b.occPct) }},
	{"CLEAN MiB/s", 'c', func(a, b *topRow) int { return cmp.Compare(a.cleanMiBs, b.cleanMiBs) }},
	{"R p50", 0, nil},
	{"R p99", 'l', func(a, b *topRow) int { return cmp.Compare(a.rdP99, b.rdP99) }},
	{"W p99", 0, nil},
	{"PT/s", 'p', func(a, b *topRow) int { return cmp.Compare(a.ptPerSec, b.ptPerSec) }},
	{"PT BY REASON", 0, nil},
}

// topSortKey finds the column a sort key (a key letter or a column title,
// any case) names.
func topSortKey(s string) (int, error) {
	for i, c := range topColumns {
		if c.less == nil {
			continue
		}
		if (len(s) == 1 && rune(s[0]) == c.key) || strings.EqualFold(s, c.title) || strings.EqualFold(s, strings.ReplaceAll(c.title, " ", "")) {
			return i, nil
		}
	}
	var keys []string
	for _, c := range topColumns {
		if c.less != nil {
			keys = append(keys, fmt.Sprintf("%c (%s)", c.key, c.title))
		}
	}
	return 0, fmt.Errorf("no column to sort by %q; the keys: %s", s, strings.Join(keys, ", "))
}

// topRows computes the rows from two snapshots of the same daemon, prev
// taken first; a volume new in cur gets rates from zero.
func topRows(prev, cur metrics.Snapshot) []topRow {
	secs := time.Duration(cur.Time - prev.Time).Seconds()
	if secs <= 0 {
		secs = 1
	}
	old := map[string]metrics.Volume{}
	for _, v := range prev.Volumes {
		old[v.Name] = v
	}
	rows := make([]topRow, 0, len(cur.Volumes))
	for _, v := range cur.Volumes {
		r := topRow{name: v.Name, state: v.State, hitPct: -1}
		if !complete(&v) {
			if r.state == "started" {
				r.state = "started?" // a daemon that sent no numbers for it
			}
			rows = append(rows, r)
			continue
		}
		p, ok := old[v.Name]
		if !ok || !complete(&p) {
			p = metrics.Volume{Requests: &metrics.Requests{}, Bytes: &metrics.Bytes{}, Usage: &metrics.Usage{}, Cleaner: &metrics.Cleaner{}, Latency: &metrics.VolumeLatency{}}
		}
		rate := func(a, b uint64) float64 { return float64(a-min(a, b)) / secs }
		rq, pq := v.Requests, p.Requests
		reads := rq.ReadHits + rq.ReadPartialMisses + rq.ReadFullMisses + sum(rq.ReadPassThrough)
		preads := pq.ReadHits + pq.ReadPartialMisses + pq.ReadFullMisses + sum(pq.ReadPassThrough)
		writes := rq.WriteHits + rq.WritePartialMisses + rq.WriteFullMisses + sum(rq.WritePassThrough)
		pwrites := pq.WriteHits + pq.WritePartialMisses + pq.WriteFullMisses + sum(pq.WritePassThrough)
		r.readIOPS, r.writeIOPS = rate(reads, preads), rate(writes, pwrites)
		r.readHitsPS, r.readsPS = rate(rq.ReadHits, pq.ReadHits), r.readIOPS
		if r.readsPS > 0 {
			r.hitPct = 100 * r.readHitsPS / r.readsPS
		}
		r.readMiBs = rate(v.Bytes.VolumeRead, p.Bytes.VolumeRead) / (1 << 20)
		r.writeMiBs = rate(v.Bytes.VolumeWrite, p.Bytes.VolumeWrite) / (1 << 20)
		r.cleanMiBs = rate(v.Cleaner.CleanedBytes, p.Cleaner.CleanedBytes) / (1 << 20)
		r.dirtyBytes, r.occBytes = v.Usage.DirtyBytes, v.Usage.OccupancyBytes
		if v.Usage.CacheSizeBytes > 0 {
			r.occPct = 100 * float64(v.Usage.OccupancyBytes) / float64(v.Usage.CacheSizeBytes)
		}
		r.ptByReason = map[string]float64{}
		for _, by := range []struct{ cur, old map[string]uint64 }{{rq.ReadPassThrough, pq.ReadPassThrough}, {rq.WritePassThrough, pq.WritePassThrough}} {
			for reason, n := range by.cur {
				if d := rate(n, by.old[reason]); d > 0 {
					r.ptByReason[reason] += d
					r.ptPerSec += d
				}
			}
		}
		l, pl := v.Latency, p.Latency
		rd := l.ReadHit.Latency().Add(l.ReadMiss.Latency()).Sub(pl.ReadHit.Latency().Add(pl.ReadMiss.Latency()))
		wr := l.Write.Latency().Sub(pl.Write.Latency())
		r.rdP50, r.rdP99, r.wrP99 = rd.Quantile(0.5), rd.Quantile(0.99), wr.Quantile(0.99)
		rows = append(rows, r)
	}
	return rows
}

// complete reports whether v carries every group of numbers top reads.
func complete(v *metrics.Volume) bool {
	return v.Requests != nil && v.Bytes != nil && v.Usage != nil && v.Cleaner != nil && v.Latency != nil
}

func sum(m map[string]uint64) uint64 {
	var n uint64
	for _, v := range m {
		n += v
	}
	return n
}

// sortTopRows sorts rows by column col: the name ascending, every other
// column descending (busiest first), ties by name.
func sortTopRows(rows []topRow, col int) {
	less := topColumns[col].less
	slices.SortStableFunc(rows, func(a, b topRow) int {
		c := less(&a, &b)
		if col != 0 {
			c = -c
		}
		if c == 0 {
			return strings.Compare(a.name, b.name)
		}
		return c
	})
}

// cells returns the row's cells, one per column, control characters (a
// name's tab or newline would break the table) shown as '?'.
func (r *topRow) cells() []string {
	out := r.rawCells()
	for i, c := range out {
		out[i] = strings.Map(func(r rune) rune {
			if unicode.IsControl(r) {
				return '?'
			}
			return r
		}, c)
	}
	return out
}

func (r *topRow) rawCells() []string {
	if r.state != "started" {
		out := make([]string, len(topColumns))
		for i := range out {
			out[i] = "-"
		}
		out[0], out[1] = r.name, r.state
		return out
	}
	hit := "-"
	if r.hitPct >= 0 {
		hit = fmt.Sprintf("%.1f", r.hitPct)
	}
	reasons := make([]string, 0, len(r.ptByReason))
	for reason, n := range r.ptByReason {
		reasons = append(reasons, fmt.Sprintf("%s=%.0f", reason, n))
	}
	slices.Sort(reasons)
	by := strings.Join(reasons, " ")
	if by == "" {
		by = "-"
	}
	return []string{
		r.name, r.state,
		fmt.Sprintf("%.0f", r.readIOPS), fmt.Sprintf("%.0f", r.writeIOPS),
		fmt.Sprintf("%.1f", r.readMiBs), fmt.Sprintf("%.1f", r.writeMiBs),
		hit, humanSize(r.dirtyBytes), fmt.Sprintf("%.1f", r.occPct), fmt.Sprintf("%.1f", r.cleanMiBs),
		fmtLatency(r.rdP50), fmtLatency(r.rdP99), fmtLatency(r.wrP99),
		fmt.Sprintf("%.0f", r.ptPerSec), by,
	}
}

// fmtLatency prints a quantile's bucket bound: "≤" a duration.
func fmtLatency(d time.Duration) string {
	switch {
	case d == 0:
		return "-"
	case d < 0:
		return ">" + latency.Bound(latency.NumBuckets-1).String()
	}
	return "≤" + d.String()
}

// writeTopTable prints rows as a plain table (top --once).
func writeTopTable(w io.Writer, rows []topRow) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	titles := make([]string, len(topColumns))
	for i, c := range topColumns {
		titles[i] = c.title
	}
	fmt.Fprintln(tw, strings.Join(titles, "\t"))
	for i := range rows {
		fmt.Fprintln(tw, strings.Join(rows[i].cells(), "\t"))
	}
	return tw.Flush()
}
