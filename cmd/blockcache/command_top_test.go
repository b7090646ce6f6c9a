package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"blockcache/internal/latency"
	"blockcache/internal/metrics"
)

// topVolume is a started volume whose counters are all n (pass-through by
// seq_cutoff only), with one read-hit latency count per request in the
// 4 µs bucket.
func topVolume(name string, n uint64, dirty uint64) metrics.Volume {
	var hist [latency.NumBuckets + 1]uint64
	hist[2] = n
	h := metrics.Histogram{Counts: hist[:]}
	return metrics.Volume{
		Name: name, State: "started",
		Requests: &metrics.Requests{ReadHits: n, ReadFullMisses: n, WriteHits: n,
			ReadPassThrough: map[string]uint64{"seq_cutoff": n, "mode": 0}, WritePassThrough: map[string]uint64{}},
		Bytes:   &metrics.Bytes{VolumeRead: n * 4096, VolumeWrite: n * 4096},
		Usage:   &metrics.Usage{DirtyBytes: dirty, OccupancyBytes: 2 * dirty, CacheSizeBytes: 8 * dirty},
		Cleaner: &metrics.Cleaner{CleanedBytes: n << 20},
		Latency: &metrics.VolumeLatency{ReadHit: h, ReadMiss: metrics.Histogram{Counts: hist[:]}, Write: h},
	}
}

func TestTopRowsRatesAndSort(t *testing.T) {
	prev := metrics.Snapshot{Time: 0, Volumes: []metrics.Volume{topVolume("a", 0, 0), topVolume("b", 0, 0)}}
	cur := metrics.Snapshot{Time: int64(2 * time.Second), Volumes: []metrics.Volume{
		topVolume("a", 100, 1<<20), topVolume("b", 400, 1<<10), {Name: "w", State: "waiting"}}}
	rows := topRows(prev, cur)
	a := rows[0]
	// 100 hits + 100 misses + 100 pass-through reads in 2 s.
	if a.readIOPS != 150 || a.writeIOPS != 50 || a.hitPct < 33.3 || a.hitPct > 33.4 || a.ptPerSec != 50 || a.ptByReason["seq_cutoff"] != 50 {
		t.Errorf("row a: %+v", a)
	}
	if a.cleanMiBs != 50 || a.occPct != 25 || a.rdP99 != 4*time.Microsecond || a.readMiBs != 100*4096/2.0/(1<<20) {
		t.Errorf("row a: clean %v occ %v p99 %v read MiB/s %v", a.cleanMiBs, a.occPct, a.rdP99, a.readMiBs)
	}
	col, err := topSortKey("r")
	if err != nil {
		t.Fatal(err)
	}
	sortTopRows(rows, col)
	if rows[0].name != "b" || rows[1].name != "a" {
		t.Errorf("sorted by read IOPS: %s, %s", rows[0].name, rows[1].name)
	}
	col, _ = topSortKey("dirty")
	sortTopRows(rows, col)
	if rows[0].name != "a" {
		t.Errorf("sorted by dirty: %s first", rows[0].name)
	}
	if _, err := topSortKey("x"); err == nil || !strings.Contains(err.Error(), "the keys") {
		t.Errorf("bad key: %v", err)
	}

	var out bytes.Buffer
	if err := writeTopTable(&out, rows); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "VOLUME") || !strings.Contains(lines[0], "PT BY REASON") {
		t.Fatalf("table:\n%s", out.String())
	}
	if f := strings.Fields(lines[1]); f[0] != "a" || f[2] != "150" || f[6] != "33.3" || f[len(f)-1] != "seq_cutoff=50" {
		t.Errorf("row a printed as %q", lines[1])
	}
	if f := strings.Fields(lines[3]); f[0] != "w" || f[1] != "waiting" || f[2] != "-" {
		t.Errorf("waiting row printed as %q", lines[3])
	}
}

// FuzzTopRows feeds top whatever a daemon could answer: two
// blockcache_get_metrics results, decoded, must give rows and a table,
// never a panic.
func FuzzTopRows(f *testing.F) {
	prev := metrics.Snapshot{Volumes: []metrics.Volume{topVolume("a", 1, 0)}}
	cur := metrics.Snapshot{Time: 1e9, Volumes: []metrics.Volume{topVolume("a", 5, 4096), {Name: "w", State: "waiting"}}}
	pj, _ := json.Marshal(prev)
	cj, _ := json.Marshal(cur)
	f.Add(pj, cj)
	f.Add([]byte(`{"volumes":[{"name":"x","state":"started","requests":{}}]}`), []byte(`{"time_unix_nano":-5,"volumes":[{"name":"x","state":"started","requests":{"read_hits":1},"latency":{"read_hit":{"counts":[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30]}}}]}`))
	f.Add([]byte(`{}`), []byte(`{"volumes":[{"name":"x","state":"started","requests":{},"bytes":{},"usage":{},"cleaner":{},"latency":{}}]}`))
	f.Fuzz(func(t *testing.T, a, b []byte) {
		var prev, cur metrics.Snapshot
		if json.Unmarshal(a, &prev) != nil || json.Unmarshal(b, &cur) != nil {
			return
		}
		rows := topRows(prev, cur)
		if len(rows) != len(cur.Volumes) {
			t.Fatalf("%d rows for %d volumes", len(rows), len(cur.Volumes))
		}
		for col := range topColumns {
			if topColumns[col].less != nil {
				sortTopRows(rows, col)
			}
		}
		var out bytes.Buffer
		if err := writeTopTable(&out, rows); err != nil {
			t.Fatal(err)
		}
		if got := strings.Count(out.String(), "\n"); got != len(rows)+1 {
			t.Fatalf("%d lines for %d rows", got, len(rows))
		}
	})
}
