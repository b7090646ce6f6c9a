package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"blockcache/internal/testutil"
)

// metricsDaemon starts a bare daemon serving /metrics on a free port and
// returns it with the scrape URL, taken from its "metrics listening" line.
func metricsDaemon(t *testing.T) (*Daemon, string) {
	t.Helper()
	d := StartDaemon(t, DaemonOpts{Bare: true, Args: []string{"--metrics-listen", "127.0.0.1:0"}})
	line, ok, _ := d.stderr.find("metrics listening")
	if !ok {
		t.Fatalf("no metrics listening line:\n%s", d.Stderr())
	}
	_, url, _ := strings.Cut(line, "url=")
	url, _, _ = strings.Cut(url, " ")
	return d, strings.Trim(url, `"`)
}

// scrape fetches url and returns its text and its samples by series, as
// `name{label="value",...}` with the labels in the order the text has
// them (sorted by name).
func scrape(t *testing.T, url string) (string, map[string]float64) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s %v", url, resp.Status, err)
	}
	samples := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(string(body)))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("sample %q: %v", line, err)
		}
		samples[line[:i]] = v
	}
	return string(body), samples
}

// series names a sample: labels as name=value pairs, sorted here as the
// exposition sorts them, but for a histogram bucket's le, which comes last.
func series(name string, labels ...string) string {
	pairs := make([]string, 0, len(labels)/2)
	le := ""
	for i := 0; i+1 < len(labels); i += 2 {
		if labels[i] == "le" {
			le = `le="` + labels[i+1] + `"`
			continue
		}
		pairs = append(pairs, labels[i]+`="`+labels[i+1]+`"`)
	}
	slices.Sort(pairs)
	if le != "" {
		pairs = append(pairs, le)
	}
	return name + "{" + strings.Join(pairs, ",") + "}"
}

// promtoolCheck runs promtool check metrics on a scrape.
func promtoolCheck(t *testing.T, text string) {
	t.Helper()
	cmd := exec.Command(testutil.RequireTool(t, "promtool"), "check", "metrics")
	cmd.Stdin = strings.NewReader(text)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("promtool check metrics: %v\n%s", err, out)
	}
}

// statMaps is bdev_ocf_get_stats as maps, to compare with a scrape.
type statMaps struct {
	Requests map[string]struct{ Count uint64 } `json:"requests"`
	Blocks   map[string]struct{ Count uint64 } `json:"blocks"`
	Usage    map[string]struct{ Count uint64 } `json:"usage"`
}

// TestMetricsScrape: after a known sequence of NBD requests the scrape
// passes promtool, its counters equal bdev_ocf_get_stats, the NBD export's
// histograms count the requests, and bdev_ocf_reset_stats leaves the
// counters alone.
func TestMetricsScrape(t *testing.T) {
	t.Parallel()
	env := testutil.NbdshEnv(t)
	d, url := metricsDaemon(t)
	uri := d.createCachedVolume(t, "Mv", "wb", 16, 64, 4)
	d.Call(t, "bdev_ocf_set_seqcutoff", map[string]any{"name": "Mv", "policy": "never"})

	// 16 writes of 64 KiB (full misses), 16 reads of them (hits), 8 reads
	// of 64 KiB elsewhere (full misses), a flush.
	testutil.Run(t, env, "nbdsh", "-u", uri, "-c", `
buf = b"\x5a" * 65536
for i in range(16):
    h.pwrite(buf, i * 65536)
for i in range(16):
    assert h.pread(65536, i * 65536) == buf
for i in range(8):
    h.pread(65536, (32 << 20) + i * 65536)
h.flush()
`)
	text, m := scrape(t, url)
	promtoolCheck(t, text)
	var st statMaps
	d.CallInto(t, "bdev_ocf_get_stats", map[string]any{"name": "Mv"}, &st)
	vol := []string{"volume", "Mv", "cache", "Mv_cache", "core", "Mv_core"}
	req := func(dir, result string) float64 {
		return m[series("blockcache_requests_total", append(vol, "direction", dir, "result", result)...)]
	}
	pt := func(dir string) (n float64) {
		for _, r := range []string{"fallback", "mode", "seq_cutoff", "promotion", "no_space", "unaligned"} {
			n += m[series("blockcache_pass_through_requests_total", append(vol, "direction", dir, "reason", r)...)]
		}
		return n
	}
	for _, c := range []struct {
		what string
		got  float64
		want uint64
	}{
		{"read hits", req("read", "hit"), st.Requests["rd_hits"].Count},
		{"read full misses", req("read", "full_miss"), st.Requests["rd_full_misses"].Count},
		{"read partial misses", req("read", "partial_miss"), st.Requests["rd_partial_misses"].Count},
		{"write full misses", req("write", "full_miss"), st.Requests["wr_full_misses"].Count},
		{"write hits", req("write", "hit"), st.Requests["wr_hits"].Count},
		{"read pass-through", pt("read"), st.Requests["rd_pt"].Count},
		{"write pass-through", pt("write"), st.Requests["wr_pt"].Count},
		{"volume read 4 KiB blocks", m[series("blockcache_volume_bytes_total", append(vol, "direction", "read")...)] / 4096, st.Blocks["volume_rd"].Count},
		{"volume write 4 KiB blocks", m[series("blockcache_volume_bytes_total", append(vol, "direction", "write")...)] / 4096, st.Blocks["volume_wr"].Count},
		{"core read 4 KiB blocks", m[series("blockcache_core_bytes_total", append(vol, "direction", "read")...)] / 4096, st.Blocks["core_volume_rd"].Count},
		{"cache write 4 KiB blocks", m[series("blockcache_cache_bytes_total", append(vol, "direction", "write")...)] / 4096, st.Blocks["cache_volume_wr"].Count},
		{"dirty 4 KiB blocks", m[series("blockcache_dirty_bytes", vol...)] / 4096, st.Usage["dirty"].Count},
		{"occupancy 4 KiB blocks", m[series("blockcache_occupancy_bytes", vol...)] / 4096, st.Usage["occupancy"].Count},
	} {
		if c.got != float64(c.want) {
			t.Errorf("%s: scrape %v, bdev_ocf_get_stats %d", c.what, c.got, c.want)
		}
	}
	if req("read", "hit") != 16 || req("read", "full_miss") != 8 || req("write", "full_miss") != 16 {
		t.Errorf("requests: %v read hits, %v read misses, %v write misses; want 16, 8, 16", req("read", "hit"), req("read", "full_miss"), req("write", "full_miss"))
	}
	if got := m[series("blockcache_dirty_bytes", vol...)]; got != 1<<20 {
		t.Errorf("dirty bytes %v, want 1 MiB", got)
	}
	lat := func(op string) float64 {
		return m[series("blockcache_volume_request_duration_seconds_count", append(vol, "op", op)...)]
	}
	if lat("read_hit") != 16 || lat("read_miss") != 8 || lat("write") != 16 {
		t.Errorf("volume latency counts: read_hit %v read_miss %v write %v; want 16 8 16", lat("read_hit"), lat("read_miss"), lat("write"))
	}
	nbdLat := func(op string) float64 {
		return m[series("blockcache_nbd_request_duration_seconds_count", "export", "Mv", "op", op)]
	}
	if nbdLat("read") != 24 || nbdLat("write") != 16 || nbdLat("other") != 1 {
		t.Errorf("NBD latency counts: read %v write %v other %v; want 24 16 1", nbdLat("read"), nbdLat("write"), nbdLat("other"))
	}
	info := series("blockcache_volume_info", append(vol, "mode", "wb", "line_size", "4096", "cleaning_policy", "alru", "promotion_policy", "always", "seq_cutoff_policy", "never")...)
	if m[info] != 1 {
		t.Errorf("no %s in the scrape:\n%s", info, text)
	}
	if m[series("blockcache_volumes", "state", "started")] != 1 || m[series("blockcache_volume_state", append(vol, "state", "started")...)] != 1 {
		t.Error("the volume is not reported started")
	}

	// The RPC view resets; the counters do not.
	d.Call(t, "bdev_ocf_reset_stats", map[string]any{"name": "Mv"})
	d.CallInto(t, "bdev_ocf_get_stats", map[string]any{"name": "Mv"}, &st)
	if st.Requests["rd_hits"].Count != 0 {
		t.Errorf("rd_hits after bdev_ocf_reset_stats: %d", st.Requests["rd_hits"].Count)
	}
	_, m2 := scrape(t, url)
	for k, v := range m {
		if strings.HasPrefix(k, "blockcache_requests_total") && m2[k] != v {
			t.Errorf("%s went from %v to %v over bdev_ocf_reset_stats", k, v, m2[k])
		}
	}

	// blockcache_get_metrics has the same numbers.
	var snap struct {
		Volumes []struct {
			Name     string
			Requests struct {
				ReadHits uint64 `json:"read_hits"`
			}
		}
	}
	d.CallInto(t, "blockcache_get_metrics", map[string]any{"name": "Mv"}, &snap)
	if len(snap.Volumes) != 1 || snap.Volumes[0].Requests.ReadHits != 16 {
		t.Errorf("blockcache_get_metrics: %+v", snap)
	}
	d.expectError(t, "blockcache_get_metrics", map[string]any{"name": "Nope"}, -32602, "No such device")
}

// TestMetricsPassThroughReasons produces each pass-through reason the engine
// takes through NBD and checks that exactly its counter moved.
func TestMetricsPassThroughReasons(t *testing.T) {
	t.Parallel()
	env := testutil.NbdshEnv(t)
	d, url := metricsDaemon(t)
	// The cache device sits on an error bdev so that cache reads can be
	// failed for the fallback.
	d.Call(t, "bdev_malloc_create", mallocParams("Pc", 16, 512))
	d.Call(t, "bdev_malloc_create", mallocParams("Pb", 128, 512))
	d.Call(t, "bdev_error_create", map[string]any{"base_name": "Pc"})
	d.Call(t, "bdev_ocf_create", ocfParams("Pv", "wt", "EE_Pc", "Pb", 4))
	var uri string
	d.CallInto(t, "nbd_start_disk", map[string]any{"bdev_name": "Pv"}, &uri)
	d.Call(t, "bdev_ocf_set_seqcutoff", map[string]any{"name": "Pv", "policy": "never"})
	vol := []string{"volume", "Pv", "cache", "EE_Pc", "core", "Pb"}
	reasons := []string{"fallback", "mode", "seq_cutoff", "promotion", "no_space", "unaligned"}
	counts := func() map[string]float64 {
		_, m := scrape(t, url)
		out := map[string]float64{}
		for _, r := range reasons {
			for _, dir := range []string{"read", "write"} {
				out[dir+" "+r] = m[series("blockcache_pass_through_requests_total", append(vol, "direction", dir, "reason", r)...)]
			}
		}
		return out
	}
	nbdsh := func(script string) { testutil.Run(t, env, "nbdsh", "-u", uri, "-c", script) }
	step := func(what string, want map[string]float64, do func()) {
		t.Helper()
		before := counts()
		do()
		after := counts()
		for k := range after {
			if d := after[k] - before[k]; d != want[k] {
				t.Errorf("%s: %s moved by %v, want %v", what, k, d, want[k])
			}
		}
	}

	step("cache mode pt", map[string]float64{"read mode": 2, "write mode": 1}, func() {
		d.Call(t, "bdev_ocf_set_cache_mode", map[string]any{"name": "Pv", "mode": "pt"})
		nbdsh("h.pread(4096, 0); h.pread(4096, 8192); h.pwrite(b'x' * 4096, 0)")
		d.Call(t, "bdev_ocf_set_cache_mode", map[string]any{"name": "Pv", "mode": "wt"})
	})
	step("sequential cutoff", map[string]float64{"read seq_cutoff": 13}, func() {
		d.Call(t, "bdev_ocf_set_seqcutoff", map[string]any{"name": "Pv", "policy": "always", "threshold": 16, "promotion_count": 2})
		nbdsh("for i in range(16): h.pread(4096, (2 << 20) + i * 4096)")
		d.Call(t, "bdev_ocf_set_seqcutoff", map[string]any{"name": "Pv", "policy": "never"})
	})
	step("promotion refused", map[string]float64{"read promotion": 2}, func() {
		d.Call(t, "bdev_ocf_set_promotion", map[string]any{"name": "Pv", "policy": "nhit", "insertion_threshold": 3, "trigger_threshold": 0})
		nbdsh("h.pread(4096, 3 << 20); h.pread(4096, 3 << 20)")
		d.Call(t, "bdev_ocf_set_promotion", map[string]any{"name": "Pv", "policy": "always"})
	})
	step("no space: a read larger than the cache", map[string]float64{"read no_space": 1}, func() {
		nbdsh("h.pread(24 << 20, 64 << 20)")
	})
	step("fallback after cache errors", map[string]float64{"read fallback": 1, "write fallback": 1}, func() {
		d.Call(t, "bdev_ocf_set_fallback_pt", map[string]any{"name": "Pv", "threshold": 1})
		nbdsh("h.pread(4096, 5 << 20)") // inserted
		d.Call(t, "bdev_error_inject_error", map[string]any{"name": "EE_Pc", "io_type": "read", "error_type": "failure", "num": 100})
		nbdsh("h.pread(4096, 5 << 20)") // a hit whose cache reads fail: from the core, and the fallback starts
		var got []struct {
			FallbackPT bool `json:"fallback_pt"`
		}
		d.CallInto(t, "bdev_ocf_get_bdevs", map[string]any{"name": "Pv"}, &got)
		if len(got) != 1 || !got[0].FallbackPT {
			t.Fatalf("no fallback after a failed cache read at threshold 1: %+v", got)
		}
		nbdsh("h.pread(4096, 5 << 20); h.pwrite(b'y' * 4096, 5 << 20)")
	})
	text, m := scrape(t, url)
	promtoolCheck(t, text)
	if m[series("blockcache_cache_fallback_pass_through", "cache", "EE_Pc")] != 1 {
		t.Error("blockcache_cache_fallback_pass_through is not 1 during the fallback")
	}
	if m[series("blockcache_device_errors_total", append(vol, "device", "cache", "direction", "read")...)] < 1 {
		t.Error("the failed cache read is not counted in blockcache_device_errors_total")
	}
}

// TestMetricsSlowCoreMisses: on a core that takes 20 ms a read, read misses
// land in the miss histogram's buckets above 16 ms, and hits below them.
func TestMetricsSlowCoreMisses(t *testing.T) {
	t.Parallel()
	env := testutil.NbdshEnv(t)
	d, url := metricsDaemon(t)
	const latUS = 20_000
	uri := d.createSlowCoreVolume(t, "Sv", "wt", 16, 16, 4, latUS, latUS)
	d.Call(t, "bdev_ocf_set_seqcutoff", map[string]any{"name": "Sv", "policy": "never"})
	const misses = 8
	testutil.Run(t, env, "nbdsh", "-u", uri, "-c", fmt.Sprintf(`
for i in range(%d):
    h.pread(4096, i * 65536)
for i in range(%d):
    h.pread(4096, i * 65536)
`, misses, misses))
	text, m := scrape(t, url)
	promtoolCheck(t, text)
	vol := []string{"volume", "Sv", "cache", "Sv_cache", "core", "Sv_slow"}
	bucket := func(op, le string) float64 {
		return m[series("blockcache_volume_request_duration_seconds_bucket", append(vol, "op", op, "le", le)...)]
	}
	if n := bucket("read_miss", "+Inf"); n != misses {
		t.Fatalf("read_miss count %v, want %d", n, misses)
	}
	// 0.016384 s is the last bound below the core's 20 ms: no miss there.
	if n := bucket("read_miss", "0.016384"); n != 0 {
		t.Errorf("%v of %d misses on a 20 ms core took at most 16.4 ms", n, misses)
	}
	// Hits never wait for the core: all of them below its 20 ms.
	if n := bucket("read_hit", "0.016384"); n != misses {
		t.Errorf("%v of %d hits took at most 16.4 ms", n, misses)
	}
	sum := m[series("blockcache_volume_request_duration_seconds_sum", append(vol, "op", "read_miss")...)]
	if sum < misses*latUS/1e6 {
		t.Errorf("read_miss sum %v s, below %d misses of 20 ms", sum, misses)
	}
	var raw json.RawMessage
	d.CallInto(t, "blockcache_get_metrics", nil, &raw)
	if !strings.Contains(string(raw), `"read_miss"`) {
		t.Errorf("blockcache_get_metrics lacks the miss histogram: %s", raw)
	}

}

// TestMetricsListenRefused: an address that cannot be listened on stops
// the daemon at start, naming it; without the flag nothing listens.
func TestMetricsListenRefused(t *testing.T) {
	t.Parallel()
	d := startProcess(t, DaemonOpts{Bare: true, Args: []string{"--metrics-listen", "nonsense"}})
	if code := d.Wait(t, 30*time.Second); code != 1 || !strings.Contains(d.Stderr(), "metrics listen nonsense") {
		t.Fatalf("exit status %d, stderr:\n%s", code, d.Stderr())
	}
	off := StartDaemon(t, DaemonOpts{Bare: true})
	if strings.Contains(off.Stderr(), "metrics listening") {
		t.Fatalf("metrics served without --metrics-listen:\n%s", off.Stderr())
	}
}

// TestMetricsRemoteCore: a volume whose core is an NBD client bdev reports
// the connection up; with nbdkit killed the gauge falls to 0, and once it is
// back the reconnect is counted.
func TestMetricsRemoteCore(t *testing.T) {
	t.Parallel()
	env := testutil.NbdshEnv(t)
	srv := nbdkitTCP(t, "memory", "16M")
	d, url := metricsDaemon(t)
	d.Call(t, "bdev_nbd_client_create", map[string]any{"name": "Rc", "uri": srv.uri, "reconnect_delay_sec": 1})
	d.Call(t, "bdev_malloc_create", mallocParams("Rcache", 16, 512))
	d.Call(t, "bdev_ocf_create", ocfParams("Rv", "wt", "Rcache", "Rc", 4))
	var uri string
	d.CallInto(t, "nbd_start_disk", map[string]any{"bdev_name": "Rv"}, &uri)
	testutil.Run(t, env, "nbdsh", "-u", uri, "-c", "h.pwrite(b'r' * 4096, 0)")
	vol := []string{"volume", "Rv", "cache", "Rcache", "core", "Rc"}
	connected, reconnects := series("blockcache_remote_core_connected", vol...), series("blockcache_remote_core_reconnects_total", vol...)
	text, m := scrape(t, url)
	promtoolCheck(t, text)
	if v, ok := m[connected]; !ok || v != 1 || m[reconnects] != 0 {
		t.Fatalf("remote core metrics while connected:\n%s", grepLines(text, "remote_core"))
	}
	waitMetric := func(what, name string, want float64) {
		t.Helper()
		for end := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			text, m := scrape(t, url)
			if m[name] == want {
				return
			}
			if time.Now().After(end) {
				t.Fatalf("%s: %s never became %v:\n%s", what, name, want, grepLines(text, "remote_core"))
			}
		}
	}
	srv.kill()
	// The client notices the loss on its next request.
	writer := exec.Command(testutil.RequireTool(t, "nbdsh"), "-u", uri, "-c", "h.pwrite(b's' * 4096, 8192)")
	writer.Env = append(writer.Environ(), env...)
	if err := writer.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { writer.Process.Kill(); writer.Wait() })
	waitMetric("nbdkit killed", connected, 0)
	srv.start()
	waitMetric("nbdkit back", reconnects, 1)
	waitMetric("nbdkit back", connected, 1)
}

// grepLines returns the lines of text that contain s.
func grepLines(text, s string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
