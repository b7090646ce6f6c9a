package metrics_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"blockcache/internal/bdev"
	"blockcache/internal/bdev/bdevtest"
	"blockcache/internal/bdev/malloc"
	"blockcache/internal/metrics"
	"blockcache/internal/vbdev"
)

// newVolume builds a registry with a started write-back volume v0 on
// malloc bases c0 (cache) and b0 (core), and a waiting volume w0.
func newVolume(t *testing.T) (*vbdev.Manager, bdev.Device) {
	t.Helper()
	reg := bdev.NewRegistry()
	m := vbdev.NewManager(reg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	t.Cleanup(func() { m.Shutdown(false); m.Close() })
	for _, b := range []struct {
		name string
		mib  int
	}{{"c0", 16}, {"b0", 32}} {
		d, err := malloc.New(b.name, uuid.Nil, 512, uint64(b.mib)<<20/512)
		if err != nil {
			t.Fatal(err)
		}
		if err := reg.Register(d); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := m.Create(vbdev.Params{Name: "v0", Mode: "wb", CacheBdev: "c0", CoreBdev: "b0"}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Create(vbdev.Params{Name: "w0", Mode: "wt", CacheBdev: "c1", CoreBdev: "b1"}); err != nil {
		t.Fatal(err)
	}
	vol, err := reg.Lookup("v0")
	if err != nil {
		t.Fatal(err)
	}
	return m, vol
}

func TestGatherMatchesStats(t *testing.T) {
	m, vol := newVolume(t)
	buf := make([]byte, 8192)
	for range 3 {
		if err := vol.ReadAt(buf, 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := vol.WriteAt(buf, 1<<20, false); err != nil {
		t.Fatal(err)
	}
	s := metrics.Source{OCF: m}.Gather()
	if len(s.Volumes) != 2 || s.Volumes[1].State != "waiting" || s.Volumes[1].Requests != nil {
		t.Fatalf("volumes: %+v", s.Volumes)
	}
	v := s.Volumes[0]
	st, err := m.Stats("v0")
	if err != nil {
		t.Fatal(err)
	}
	r := v.Requests
	if r.ReadFullMisses != st.Requests.RdFullMisses || r.ReadHits != st.Requests.RdHits || r.WriteFullMisses != st.Requests.WrFullMisses ||
		r.ReadHits != 2 || r.ReadFullMisses != 1 || r.WriteFullMisses != 1 {
		t.Errorf("requests %+v, stats %+v", r, st.Requests)
	}
	if v.Bytes.VolumeRead != 3*8192 || v.Bytes.VolumeWrite != 8192 || v.Bytes.CoreRead != 8192 {
		t.Errorf("bytes %+v", v.Bytes)
	}
	if v.Usage.DirtyBytes != 8192 || v.Usage.OccupancyBytes != 4*4096 || v.Usage.DirtyBytes != 4096*st.Usage.Dirty {
		t.Errorf("usage %+v, stats %+v", v.Usage, st.Usage)
	}
	if h := v.Latency.ReadHit.Latency(); h.Count() != 2 {
		t.Errorf("read hit histogram holds %d, want 2", h.Count())
	}
	if v.Config.Mode != "wb" || v.Config.LineSizeBytes != 4096 || v.Config.CleaningPolicy != "alru" {
		t.Errorf("config %+v", v.Config)
	}
	// A reset moves the RPC view only.
	if err := m.ResetStats("v0"); err != nil {
		t.Fatal(err)
	}
	if again := (metrics.Source{OCF: m}).Gather().Volumes[0].Requests; again.ReadHits != 2 {
		t.Errorf("read hits after bdev_ocf_reset_stats: %d, want still 2", again.ReadHits)
	}
}

func TestHandlerServesPrometheusText(t *testing.T) {
	m, vol := newVolume(t)
	buf := make([]byte, 4096)
	for range 2 {
		if err := vol.ReadAt(buf, 0); err != nil {
			t.Fatal(err)
		}
	}
	srv := httptest.NewServer(metrics.Handler(metrics.Source{OCF: m}))
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %d %v", resp.StatusCode, err)
	}
	text := string(body)
	lbl := `cache="c0",core="b0"`
	for _, want := range []string{
		`# TYPE blockcache_requests_total counter`,
		`blockcache_requests_total{` + lbl + `,direction="read",result="hit",volume="v0"} 1`,
		`blockcache_requests_total{` + lbl + `,direction="read",result="full_miss",volume="v0"} 1`,
		`blockcache_volume_bytes_total{` + lbl + `,direction="read",volume="v0"} 8192`,
		`blockcache_volume_info{cache="c0",cleaning_policy="alru",core="b0",line_size="4096",mode="wb",promotion_policy="always",seq_cutoff_policy="full",volume="v0"} 1`,
		`blockcache_volume_state{cache="c1",core="b1",state="waiting",volume="w0"} 1`,
		`blockcache_volumes{state="waiting"} 1`,
		`# TYPE blockcache_volume_request_duration_seconds histogram`,
		`blockcache_volume_request_duration_seconds_count{` + lbl + `,op="read_hit",volume="v0"} 1`,
		`blockcache_volume_request_duration_seconds_bucket{` + lbl + `,op="read_miss",volume="v0",le="+Inf"} 1`,
		`blockcache_pass_through_requests_total{` + lbl + `,direction="write",reason="unaligned",volume="v0"} 0`,
		`# TYPE blockcache_absorbed_writes_total counter`,
		`blockcache_absorbed_writes_total{cache="c0"} 0`,
		`go_goroutines `,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	// Buckets are cumulative and end at the count.
	re := regexp.MustCompile(`blockcache_volume_request_duration_seconds_bucket\{[^}]*op="read_miss"[^}]*\} (\d+)`)
	prev := -1
	for _, mm := range re.FindAllStringSubmatch(text, -1) {
		n, _ := strconv.Atoi(mm[1])
		if n < prev {
			t.Fatalf("buckets not cumulative: %d after %d", n, prev)
		}
		prev = n
	}
	if prev != 1 {
		t.Errorf("last read_miss bucket %d, want 1", prev)
	}
	if resp, err := http.Get(srv.URL + "/other"); err != nil || resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /other: %v %v", resp, err)
	}
}

// scrapeText returns what /metrics serves for src.
func scrapeText(t *testing.T, src metrics.Source) string {
	t.Helper()
	srv := httptest.NewServer(metrics.Handler(src))
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %d %v", resp.StatusCode, err)
	}
	return string(body)
}

// TestAbsorbedWritesExported: a write-through volume's first write is held
// in its core write; two more of its range queue behind it, and the later
// one supersedes the earlier. The cache's absorbed write shows in the
// snapshot, in /metrics as blockcache_absorbed_writes_total{cache} and in
// the snapshot's JSON (blockcache_get_metrics).
func TestAbsorbedWritesExported(t *testing.T) {
	reg := bdev.NewRegistry()
	m := vbdev.NewManager(reg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	t.Cleanup(func() { m.Shutdown(false); m.Close() })
	cacheDev, err := malloc.New("c0", uuid.Nil, 512, 16<<20/512)
	if err != nil {
		t.Fatal(err)
	}
	coreDev, err := malloc.New("b0", uuid.Nil, 512, 32<<20/512)
	if err != nil {
		t.Fatal(err)
	}
	armed := new(atomic.Bool)
	gate := bdevtest.NewIOGate(coreDev, func(write bool, _, _ int64) bool { return write && armed.CompareAndSwap(true, false) })
	t.Cleanup(gate.Release)
	for _, d := range []bdev.Device{cacheDev, gate} {
		if err := reg.Register(d); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := m.Create(vbdev.Params{Name: "v0", Mode: "wt", CacheBdev: "c0", CoreBdev: "b0"}); err != nil {
		t.Fatal(err)
	}
	vol, err := reg.Lookup("v0")
	if err != nil {
		t.Fatal(err)
	}
	obs := m.Observe()
	if len(obs) != 1 || obs[0].Cache == nil {
		t.Fatalf("observed %+v", obs)
	}
	cache := obs[0].Cache

	const off = 1 << 20
	res := make(chan error, 3)
	armed.Store(true)
	go func() { res <- vol.WriteAt(make([]byte, 4096), off, false) }()
	if !gate.WaitHeld(1, 10*time.Second) {
		t.Fatal("the first write never reached the core")
	}
	for b := range byte(2) {
		go func() { res <- vol.WriteAt(bytes.Repeat([]byte{b + 1}, 4096), off, false) }()
	}
	for deadline := time.Now().Add(10 * time.Second); cache.AbsorbedWrites() != 1; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d writes absorbed, want 1", cache.AbsorbedWrites())
		}
	}
	for i := range 3 {
		if err := bdevtest.ReleaseAndReceive(t, gate, res, fmt.Sprintf("write %d", i+1)); err != nil {
			t.Errorf("write %d: %v", i+1, err)
		}
	}

	src := metrics.Source{OCF: m}
	s := src.Gather()
	if len(s.Volumes) != 1 || s.Volumes[0].Requests == nil || s.Volumes[0].Requests.CacheAbsorbedWrites != 1 {
		t.Fatalf("snapshot volumes %+v, want v0 with 1 absorbed write", s.Volumes)
	}
	text := scrapeText(t, src)
	for _, want := range []string{
		`# TYPE blockcache_absorbed_writes_total counter`,
		"\nblockcache_absorbed_writes_total{cache=\"c0\"} 1\n",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	raw, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var decoded struct {
		Volumes []struct {
			Requests map[string]any `json:"requests"`
		} `json:"volumes"`
	}
	if err := json.Unmarshal(raw, &decoded); err != nil {
		t.Fatal(err)
	}
	if got := decoded.Volumes[0].Requests["cache_absorbed_writes"]; got != 1.0 {
		t.Errorf("JSON requests.cache_absorbed_writes = %v, want 1", got)
	}
}
