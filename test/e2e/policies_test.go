package e2e

// Cache policies of OCF vbdevs: SPDK's bdev_ocf_set_seqcutoff and
// blockcache's bdev_ocf_set_cleaning, bdev_ocf_set_promotion and
// bdev_ocf_get_policies; their config entries; and their persistence in
// the cache metadata and in saved configs.

import (
	"blockcache/internal/testutil"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// defaultPolicies is bdev_ocf_get_policies of a fresh cache.
const defaultPolicies = `{"cleaning":{"policy":"alru","alru":{"wake_up":20,"staleness_time":120,"flush_max_buffers":100,"activity_threshold":10000,"max_dirty_ratio":80},` +
	`"acp":{"wake_up":10,"flush_max_buffers":128},"max_inflight":32},` +
	`"promotion":{"policy":"always","nhit":{"insertion_threshold":3,"trigger_threshold":80}},` +
	`"seqcutoff":{"policy":"full","threshold":1,"promotion_count":8}}`

// policiesResult is bdev_ocf_get_policies' result.
type policiesResult struct {
	Cleaning struct {
		Policy string `json:"policy"`
		ALRU   struct {
			WakeUp            int `json:"wake_up"`
			StalenessTime     int `json:"staleness_time"`
			FlushMaxBuffers   int `json:"flush_max_buffers"`
			ActivityThreshold int `json:"activity_threshold"`
			MaxDirtyRatio     int `json:"max_dirty_ratio"`
		} `json:"alru"`
		ACP struct {
			WakeUp          int `json:"wake_up"`
			FlushMaxBuffers int `json:"flush_max_buffers"`
		} `json:"acp"`
		MaxInflight int `json:"max_inflight"`
	} `json:"cleaning"`
	Promotion struct {
		Policy string `json:"policy"`
		NHit   struct {
			InsertionThreshold int `json:"insertion_threshold"`
			TriggerThreshold   int `json:"trigger_threshold"`
		} `json:"nhit"`
	} `json:"promotion"`
	SeqCutoff seqCutoffResult `json:"seqcutoff"`
}

type seqCutoffResult struct {
	Policy         string `json:"policy"`
	Threshold      int    `json:"threshold"`
	PromotionCount int    `json:"promotion_count"`
}

// policiesRaw returns bdev_ocf_get_policies of a vbdev as compact JSON.
func (d *Daemon) policiesRaw(t *testing.T, name string) string {
	t.Helper()
	return compactJSON(t, d.Call(t, "bdev_ocf_get_policies", map[string]any{"name": name}))
}

func (d *Daemon) policies(t *testing.T, name string) policiesResult {
	t.Helper()
	var p policiesResult
	d.CallInto(t, "bdev_ocf_get_policies", map[string]any{"name": name}, &p)
	return p
}

// expectParamError checks an error reply: code and message exactly, and a
// data member containing each of inData.
func (d *Daemon) expectParamError(t *testing.T, method string, params map[string]any, code int, message string, inData ...string) {
	t.Helper()
	je := d.expectError(t, method, params, code, message)
	for _, s := range inData {
		if !strings.Contains(je.Data, s) {
			t.Fatalf("%s %s: error data %q does not contain %q", method, mustJSON(params), je.Data, s)
		}
	}
}

// expectRangeError checks that a bad value gets -32602 with a message
// naming the parameter and its allowed range.
func (d *Daemon) expectRangeError(t *testing.T, method string, params map[string]any, param, allowed string) {
	t.Helper()
	je := d.CallErr(t, method, params)
	if je.Code != -32602 || !strings.Contains(je.Message, param) || !strings.Contains(je.Message, "(allowed "+allowed) {
		t.Fatalf("%s %s: got error {%d, %q} (data %q), want -32602 naming %s and (allowed %s...)",
			method, mustJSON(params), je.Code, je.Message, je.Data, param, allowed)
	}
}

// withParams returns a copy of base with each key, value pair of kv set.
func withParams(base map[string]any, kv ...any) map[string]any {
	m := map[string]any{}
	for k, v := range base {
		m[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i].(string)] = kv[i+1]
	}
	return m
}

// policyEntries returns the bdev config's entries from v's bdev_ocf_create
// to the next bdev_ocf_create (or the end), as compact JSON.
func (d *Daemon) policyEntries(t *testing.T, v string) []string {
	t.Helper()
	var out []string
	in := false
	for _, e := range d.configEntries(t, "bdev") {
		var m struct {
			Method string         `json:"method"`
			Params map[string]any `json:"params"`
		}
		if err := json.Unmarshal(e, &m); err != nil {
			t.Fatal(err)
		}
		if m.Method == "bdev_ocf_create" || m.Method == "bdev_wait_for_examine" {
			if in {
				break
			}
			in = m.Method == "bdev_ocf_create" && m.Params["name"] == v
			continue
		}
		if in {
			out = append(out, compactJSON(t, e))
		}
	}
	return out
}

// checkPolicyMethods drives the four policy methods on v0 and v1, two
// started vbdevs sharing a cache, and leaves their policies at the
// defaults.
func checkPolicyMethods(t *testing.T, d *Daemon, v0, v1 string) {
	t.Helper()
	for _, v := range []string{v0, v1} {
		if got := d.policiesRaw(t, v); got != defaultPolicies {
			t.Fatalf("bdev_ocf_get_policies %s of a fresh cache:\n got %s\nwant %s", v, got, defaultPolicies)
		}
	}
	before := d.configEntries(t, "bdev")
	for _, e := range before {
		if strings.Contains(string(e), "bdev_ocf_set_") {
			t.Fatalf("config of vbdevs with default policies has %s", e)
		}
	}
	d.expectError(t, "bdev_ocf_get_policies", map[string]any{"name": "Nope"}, -32602, "No such device")
	d.expectError(t, "bdev_ocf_get_policies", map[string]any{}, -32602, "Invalid parameters")
	d.expectError(t, "bdev_ocf_get_policies", map[string]any{"name": v0, "bogus": 1}, -32602, "Invalid parameters")

	// Sequential cutoff, per core: v1 keeps its own.
	const seqFail = "OCF could not set sequential cutoff parameters: -22"
	seq := func(v string, params map[string]any) {
		t.Helper()
		params["name"] = v
		expectJSON(t, "bdev_ocf_set_seqcutoff", d.Call(t, "bdev_ocf_set_seqcutoff", params), "true")
	}
	checkSeq := func(v string, want seqCutoffResult) {
		t.Helper()
		if got := d.policies(t, v).SeqCutoff; got != want {
			t.Fatalf("sequential cutoff of %s: %+v, want %+v", v, got, want)
		}
	}
	seq(v0, map[string]any{"policy": "always", "threshold": 64, "promotion_count": 4})
	checkSeq(v0, seqCutoffResult{"always", 64, 4})
	checkSeq(v1, seqCutoffResult{"full", 1, 8})
	seq(v0, map[string]any{"policy": "never"}) // absent: unchanged
	checkSeq(v0, seqCutoffResult{"never", 64, 4})
	seq(v0, map[string]any{"policy": "full", "threshold": 0, "promotion_count": 0}) // 0: unchanged
	checkSeq(v0, seqCutoffResult{"full", 64, 4})
	seq(v0, map[string]any{"policy": "always", "threshold": 4194304, "promotion_count": 65535})
	checkSeq(v0, seqCutoffResult{"always", 4194304, 65535})
	seq(v0, map[string]any{"policy": "always", "threshold": 1, "promotion_count": 1})
	checkSeq(v0, seqCutoffResult{"always", 1, 1})
	seq(v0, map[string]any{"policy": "always", "threshold": 64, "promotion_count": 4})
	seq(v1, map[string]any{"policy": "never", "threshold": 2048})
	checkSeq(v1, seqCutoffResult{"never", 2048, 8})

	ok := map[string]any{"name": v0, "policy": "never"}
	d.expectError(t, "bdev_ocf_set_seqcutoff", withParams(ok, "name", "Nope"), -32602, "No such device")
	d.expectError(t, "bdev_ocf_set_seqcutoff", withParams(ok, "name", "Nope", "policy", "sometimes"), -32602, "No such device")
	d.expectParamError(t, "bdev_ocf_set_seqcutoff", withParams(ok, "policy", "sometimes"), -32603, seqFail, "policy", `"sometimes"`, "always, full or never")
	d.expectParamError(t, "bdev_ocf_set_seqcutoff", withParams(ok, "threshold", 4194305), -32603, seqFail, "threshold", "allowed 1..4194304 KiB")
	d.expectParamError(t, "bdev_ocf_set_seqcutoff", withParams(ok, "promotion_count", 65536), -32603, seqFail, "promotion_count", "allowed 1..65535")
	d.expectParamError(t, "bdev_ocf_set_seqcutoff", withParams(ok, "threshold", -1), -32602, "Invalid parameters", "threshold")
	d.expectParamError(t, "bdev_ocf_set_seqcutoff", withParams(ok, "threshold", 1<<32), -32602, "Invalid parameters", "threshold")
	d.expectParamError(t, "bdev_ocf_set_seqcutoff", withParams(ok, "promotion_count", "8"), -32602, "Invalid parameters", "promotion_count")
	d.expectParamError(t, "bdev_ocf_set_seqcutoff", map[string]any{"name": v0}, -32602, "Invalid parameters", "policy")
	d.expectParamError(t, "bdev_ocf_set_seqcutoff", withParams(ok, "bogus", 1), -32602, "Invalid parameters", "bogus")
	checkSeq(v0, seqCutoffResult{"always", 64, 4}) // the failures changed nothing

	// Cleaning, per cache: set through one vbdev, seen through the other.
	expectJSON(t, "bdev_ocf_set_cleaning", d.Call(t, "bdev_ocf_set_cleaning",
		map[string]any{"name": v1, "policy": "acp", "acp_wake_up": 50, "acp_flush_max_buffers": 256}), "true")
	p := d.policies(t, v0)
	if c := p.Cleaning; c.Policy != "acp" || c.ACP.WakeUp != 50 || c.ACP.FlushMaxBuffers != 256 ||
		c.ALRU.WakeUp != 20 || c.ALRU.StalenessTime != 120 || c.ALRU.FlushMaxBuffers != 100 || c.ALRU.ActivityThreshold != 10000 ||
		c.ALRU.MaxDirtyRatio != 80 || c.MaxInflight != 32 {
		t.Fatalf("cleaning of %s after bdev_ocf_set_cleaning acp on %s: %+v", v0, v1, c)
	}
	// The edges of every range are accepted.
	d.Call(t, "bdev_ocf_set_cleaning", map[string]any{"name": v0, "policy": "nop",
		"alru_wake_up": 3600, "alru_staleness_time": 1, "alru_flush_max_buffers": 1, "alru_activity_threshold": 1000000,
		"alru_max_dirty_ratio": 100, "acp_wake_up": 10000, "acp_flush_max_buffers": 1, "max_inflight": 1})
	expectJSON(t, "cleaning at the upper/lower edges", member(t, d.Call(t, "bdev_ocf_get_policies", map[string]any{"name": v1}), "cleaning"),
		`{"policy":"nop","alru":{"wake_up":3600,"staleness_time":1,"flush_max_buffers":1,"activity_threshold":1000000,"max_dirty_ratio":100},`+
			`"acp":{"wake_up":10000,"flush_max_buffers":1},"max_inflight":1}`)
	d.Call(t, "bdev_ocf_set_cleaning", map[string]any{"name": v0, "policy": "acp",
		"alru_wake_up": 0, "alru_staleness_time": 3600, "alru_flush_max_buffers": 10000, "alru_activity_threshold": 0,
		"alru_max_dirty_ratio": 0, "acp_wake_up": 50, "acp_flush_max_buffers": 256, "max_inflight": 1024})
	const wantCleaning = `{"policy":"acp","alru":{"wake_up":0,"staleness_time":3600,"flush_max_buffers":10000,"activity_threshold":0,"max_dirty_ratio":0},` +
		`"acp":{"wake_up":50,"flush_max_buffers":256},"max_inflight":1024}`
	expectJSON(t, "cleaning at the other edges", member(t, d.Call(t, "bdev_ocf_get_policies", map[string]any{"name": v1}), "cleaning"), wantCleaning)

	cl := map[string]any{"name": v0, "policy": "acp"}
	for _, c := range []struct {
		param   string
		value   int
		allowed string
	}{
		{"alru_wake_up", 3601, "0..3600 s"},
		{"alru_staleness_time", 0, "1..3600 s"},
		{"alru_staleness_time", 3601, "1..3600 s"},
		{"alru_flush_max_buffers", 0, "1..10000"},
		{"alru_flush_max_buffers", 10001, "1..10000"},
		{"alru_activity_threshold", 1000001, "0..1000000 ms"},
		{"acp_wake_up", 10001, "0..10000 ms"},
		{"acp_flush_max_buffers", 0, "1..10000"},
		{"acp_flush_max_buffers", 10001, "1..10000"},
		{"alru_max_dirty_ratio", 101, "0..100%"},
		{"max_inflight", 0, "1..1024"},
		{"max_inflight", 1025, "1..1024"},
	} {
		d.expectRangeError(t, "bdev_ocf_set_cleaning", withParams(cl, c.param, c.value), c.param, c.allowed)
		d.expectParamError(t, "bdev_ocf_set_cleaning", withParams(cl, c.param, -1), -32602, "Invalid parameters", c.param)
	}
	d.expectRangeError(t, "bdev_ocf_set_cleaning", withParams(cl, "policy", "alru", "alru_wake_up", 3601, "acp_wake_up", 1), "alru_wake_up", "0..3600 s")
	if je := d.CallErr(t, "bdev_ocf_set_cleaning", withParams(cl, "policy", "lru")); je.Code != -32602 ||
		!strings.Contains(je.Message, `cleaning policy "lru"`) || !strings.Contains(je.Message, "alru, acp or nop") {
		t.Fatalf("bdev_ocf_set_cleaning policy lru: %+v", je)
	}
	d.expectError(t, "bdev_ocf_set_cleaning", withParams(cl, "name", "Nope"), -32602, "No such device")
	d.expectParamError(t, "bdev_ocf_set_cleaning", map[string]any{"name": v0}, -32602, "Invalid parameters", "policy")
	d.expectParamError(t, "bdev_ocf_set_cleaning", withParams(cl, "alru_wakeup", 5), -32602, "Invalid parameters", "alru_wakeup")
	expectJSON(t, "cleaning after the failures", member(t, d.Call(t, "bdev_ocf_get_policies", map[string]any{"name": v0}), "cleaning"), wantCleaning)

	// Promotion, per cache.
	expectJSON(t, "bdev_ocf_set_promotion", d.Call(t, "bdev_ocf_set_promotion",
		map[string]any{"name": v0, "policy": "nhit", "insertion_threshold": 1000, "trigger_threshold": 100}), "true")
	expectJSON(t, "promotion", member(t, d.Call(t, "bdev_ocf_get_policies", map[string]any{"name": v1}), "promotion"),
		`{"policy":"nhit","nhit":{"insertion_threshold":1000,"trigger_threshold":100}}`)
	d.Call(t, "bdev_ocf_set_promotion", map[string]any{"name": v1, "policy": "nhit", "insertion_threshold": 2, "trigger_threshold": 0})
	expectJSON(t, "promotion at the lower edges", member(t, d.Call(t, "bdev_ocf_get_policies", map[string]any{"name": v0}), "promotion"),
		`{"policy":"nhit","nhit":{"insertion_threshold":2,"trigger_threshold":0}}`)
	d.Call(t, "bdev_ocf_set_promotion", map[string]any{"name": v1, "policy": "always"}) // absent: unchanged
	d.Call(t, "bdev_ocf_set_promotion", map[string]any{"name": v1, "policy": "nhit", "insertion_threshold": 5})
	wantPromotion := `{"policy":"nhit","nhit":{"insertion_threshold":5,"trigger_threshold":0}}`
	expectJSON(t, "promotion after partial changes", member(t, d.Call(t, "bdev_ocf_get_policies", map[string]any{"name": v0}), "promotion"), wantPromotion)
	pr := map[string]any{"name": v0, "policy": "nhit"}
	for _, c := range []struct {
		param   string
		value   int
		allowed string
	}{
		{"insertion_threshold", 0, "2..1000"},
		{"insertion_threshold", 1, "2..1000"},
		{"insertion_threshold", 1001, "2..1000"},
		{"trigger_threshold", 101, "0..100%"},
	} {
		d.expectRangeError(t, "bdev_ocf_set_promotion", withParams(pr, c.param, c.value), c.param, c.allowed)
		d.expectParamError(t, "bdev_ocf_set_promotion", withParams(pr, c.param, -1), -32602, "Invalid parameters", c.param)
	}
	if je := d.CallErr(t, "bdev_ocf_set_promotion", withParams(pr, "policy", "sometimes")); je.Code != -32602 ||
		!strings.Contains(je.Message, `promotion policy "sometimes"`) || !strings.Contains(je.Message, "always or nhit") {
		t.Fatalf("bdev_ocf_set_promotion policy sometimes: %+v", je)
	}
	d.expectError(t, "bdev_ocf_set_promotion", withParams(pr, "name", "Nope"), -32602, "No such device")
	d.expectParamError(t, "bdev_ocf_set_promotion", map[string]any{"name": v0}, -32602, "Invalid parameters", "policy")
	expectJSON(t, "promotion after the failures", member(t, d.Call(t, "bdev_ocf_get_policies", map[string]any{"name": v1}), "promotion"), wantPromotion)

	// The config restores what differs from the defaults: the cache's
	// cleaning and promotion once, after its first vbdev; each core's
	// sequential cutoff after its vbdev.
	want0 := []string{
		`{"method":"bdev_ocf_set_seqcutoff","params":{"name":"` + v0 + `","policy":"always","threshold":64,"promotion_count":4}}`,
		`{"method":"bdev_ocf_set_cleaning","params":{"name":"` + v0 + `","policy":"acp","alru_wake_up":0,"alru_staleness_time":3600,` +
			`"alru_flush_max_buffers":10000,"alru_activity_threshold":0,"acp_wake_up":50,"acp_flush_max_buffers":256,` +
			`"alru_max_dirty_ratio":0,"max_inflight":1024}}`,
		`{"method":"bdev_ocf_set_promotion","params":{"name":"` + v0 + `","policy":"nhit","insertion_threshold":5,"trigger_threshold":0}}`,
	}
	want1 := []string{`{"method":"bdev_ocf_set_seqcutoff","params":{"name":"` + v1 + `","policy":"never","threshold":2048,"promotion_count":8}}`}
	if got := d.policyEntries(t, v0); !slices.Equal(got, want0) {
		t.Fatalf("config entries after %s's bdev_ocf_create:\n got %q\nwant %q", v0, got, want0)
	}
	if got := d.policyEntries(t, v1); !slices.Equal(got, want1) {
		t.Fatalf("config entries after %s's bdev_ocf_create:\n got %q\nwant %q", v1, got, want1)
	}
	checkConfigOrder(t, d.configEntries(t, "bdev"))

	// Back to the defaults: the config is SPDK's shape again.
	seq(v0, map[string]any{"policy": "full", "threshold": 1, "promotion_count": 8})
	seq(v1, map[string]any{"policy": "full", "threshold": 1})
	d.Call(t, "bdev_ocf_set_cleaning", map[string]any{"name": v1, "policy": "alru", "alru_wake_up": 20, "alru_staleness_time": 120,
		"alru_flush_max_buffers": 100, "alru_activity_threshold": 10000, "alru_max_dirty_ratio": 80, "acp_wake_up": 10, "acp_flush_max_buffers": 128,
		"max_inflight": 32})
	d.Call(t, "bdev_ocf_set_promotion", map[string]any{"name": v1, "policy": "always", "insertion_threshold": 3, "trigger_threshold": 80})
	for _, v := range []string{v0, v1} {
		if got := d.policiesRaw(t, v); got != defaultPolicies {
			t.Fatalf("bdev_ocf_get_policies %s after restoring the defaults:\n got %s\nwant %s", v, got, defaultPolicies)
		}
	}
	after := d.configEntries(t, "bdev")
	if len(after) != len(before) {
		t.Fatalf("config with the defaults restored has %d entries, had %d", len(after), len(before))
	}
	for i := range after {
		if compactJSON(t, after[i]) != compactJSON(t, before[i]) {
			t.Fatalf("config entry %d with the defaults restored: %s, was %s", i, after[i], before[i])
		}
	}
}

// checkPolicyMethodsNotStarted checks the policy methods on a vbdev that
// waits for a base bdev.
func checkPolicyMethodsNotStarted(t *testing.T, d *Daemon, v string) {
	t.Helper()
	d.expectError(t, "bdev_ocf_set_seqcutoff", map[string]any{"name": v, "policy": "always"}, -32603, "OCF could not set sequential cutoff parameters: -19")
	d.expectError(t, "bdev_ocf_set_cleaning", map[string]any{"name": v, "policy": "acp"}, -32603, "Could not set cleaning policy: -19")
	d.expectError(t, "bdev_ocf_set_promotion", map[string]any{"name": v, "policy": "nhit"}, -32603, "Could not set promotion policy: -19")
	d.expectError(t, "bdev_ocf_get_policies", map[string]any{"name": v}, -32603, "Could not get OCF policies: -19")
}

// stripPolicyEntries removes the policy entries from a persisted config.
func stripPolicyEntries(t *testing.T, file string) {
	t.Helper()
	doc := readConfig(t, file)
	removed := 0
	for i := range doc.Subsystems {
		doc.Subsystems[i].Config = slices.DeleteFunc(doc.Subsystems[i].Config, func(e json.RawMessage) bool {
			if strings.Contains(string(e), `"bdev_ocf_set_`) {
				removed++
				return true
			}
			return false
		})
	}
	if removed != 4 {
		b, _ := os.ReadFile(file)
		t.Fatalf("%s holds %d policy entries, want 4:\n%s", file, removed, b)
	}
	writeConfig(t, file, doc)
}

// TestPoliciesSurviveRestart sets every kind of policy on two vbdevs that
// share a cache on file bdevs, then checks that they come back: after a
// restart on the data directory; after a restart whose persisted config
// lost the policy entries (so from the cache metadata alone); after
// save_config → load_config into a fresh daemon on the same files; and with
// serve --config of the saved file over a wiped cache device (so from the
// config alone).
func TestPoliciesSurviveRestart(t *testing.T) {
	t.Parallel()
	testutil.RequireTool(t, "qemu-io")
	dataDir := filepath.Join(t.TempDir(), "data")
	const cacheBytes = 16 << 20
	files := sparseFiles(t, map[string]int64{"cache.bin": cacheBytes, "core0.bin": 32 << 20, "core1.bin": 16 << 20})
	cacheFile := filepath.Join(files, "cache.bin")
	create := func(d *Daemon) {
		d.Call(t, "bdev_aio_create", aioParams(cacheFile, "PCache"))
		d.Call(t, "bdev_aio_create", aioParams(filepath.Join(files, "core0.bin"), "PCore0"))
		d.Call(t, "bdev_aio_create", aioParams(filepath.Join(files, "core1.bin"), "PCore1"))
		d.Call(t, "bdev_ocf_create", ocfParams("PVol0", "wt", "PCache", "PCore0", 0))
		d.Call(t, "bdev_ocf_create", ocfParams("PVol1", "wt", "PCache", "PCore1", 0))
	}
	// An empty persisted config: no embedded default volume.
	persisted := filepath.Join(dataDir, "config.json")
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, dataDir, "config.json", []byte(`{"subsystems":[{"subsystem":"bdev","config":[]}]}`))
	a := StartDaemon(t, DaemonOpts{DataDir: dataDir})
	create(a)
	a.Call(t, "bdev_ocf_set_seqcutoff", map[string]any{"name": "PVol0", "policy": "always", "threshold": 4, "promotion_count": 1})
	a.Call(t, "bdev_ocf_set_seqcutoff", map[string]any{"name": "PVol1", "policy": "never", "threshold": 512, "promotion_count": 16})
	a.Call(t, "bdev_ocf_set_cleaning", map[string]any{"name": "PVol1", "policy": "acp", "alru_wake_up": 5, "acp_wake_up": 250, "acp_flush_max_buffers": 64,
		"alru_max_dirty_ratio": 35, "max_inflight": 8})
	a.Call(t, "bdev_ocf_set_promotion", map[string]any{"name": "PVol1", "policy": "nhit", "insertion_threshold": 7, "trigger_threshold": 90})
	const cleaning = `"cleaning":{"policy":"acp","alru":{"wake_up":5,"staleness_time":120,"flush_max_buffers":100,"activity_threshold":10000,"max_dirty_ratio":35},` +
		`"acp":{"wake_up":250,"flush_max_buffers":64},"max_inflight":8},"promotion":{"policy":"nhit","nhit":{"insertion_threshold":7,"trigger_threshold":90}}`
	want := map[string]string{
		"PVol0": `{` + cleaning + `,"seqcutoff":{"policy":"always","threshold":4,"promotion_count":1}}`,
		"PVol1": `{` + cleaning + `,"seqcutoff":{"policy":"never","threshold":512,"promotion_count":16}}`,
	}
	check := func(d *Daemon, when string) {
		t.Helper()
		for v, w := range want {
			if got := d.policiesRaw(t, v); got != w {
				t.Fatalf("policies of %s %s:\n got %s\nwant %s", v, when, got, w)
			}
		}
		// The restored sequential cutoff acts: PVol0 sends a sequential
		// stream pass-through, PVol1 caches it (nhit promotion applies only
		// from 90% occupancy).
		d.Call(t, "bdev_ocf_reset_stats", map[string]any{"name": "PVol0"})
		d.Call(t, "bdev_ocf_reset_stats", map[string]any{"name": "PVol1"})
		for _, v := range []string{"PVol0", "PVol1"} {
			var uri string
			d.CallInto(t, "nbd_start_disk", map[string]any{"bdev_name": v}, &uri)
			qemuIO(t, uri, "write -P 0x11 0 64k", "write -P 0x12 64k 64k", "write -P 0x13 128k 64k", "read -P 0x12 64k 64k")
			d.Call(t, "nbd_stop_disk", map[string]any{"nbd_device": uri})
		}
		if s := d.stats(t, "PVol0"); s.Requests.WrPT.Count == 0 {
			t.Fatalf("PVol0 (cutoff always, 4 KiB) %s: no pass-through writes: %+v", when, s.Requests)
		}
		if s := d.stats(t, "PVol1"); s.Requests.WrPT.Count != 0 {
			t.Fatalf("PVol1 (cutoff never) %s: %d pass-through writes", when, s.Requests.WrPT.Count)
		}
	}
	check(a, "as set")
	saved, err := a.Client(t).SaveConfig()
	if err != nil {
		t.Fatal(err)
	}
	a.Stop(t)

	// Restart on the data directory: config and metadata agree.
	b := StartDaemon(t, DaemonOpts{DataDir: dataDir})
	check(b, "after a restart")
	b.Stop(t)

	// The metadata alone: the persisted config without the policy entries.
	stripPolicyEntries(t, persisted)
	c := StartDaemon(t, DaemonOpts{DataDir: dataDir})
	if !strings.Contains(c.Stderr(), "cache loaded") {
		t.Fatalf("the restart did not load the cache from its metadata:\n%s", c.Stderr())
	}
	check(c, "after a restart without policy entries in the config")
	// ... and the daemon persists them again.
	if cfg, err := os.ReadFile(persisted); err != nil || strings.Count(string(cfg), `"bdev_ocf_set_`) != 4 {
		t.Fatalf("persisted config after the restart (%v):\n%s", err, cfg)
	}
	c.Stop(t)

	// save_config → load_config into a fresh daemon on the same files.
	for _, s := range []string{`"bdev_ocf_set_seqcutoff"`, `"bdev_ocf_set_cleaning"`, `"bdev_ocf_set_promotion"`} {
		if !strings.Contains(string(saved), s) {
			t.Fatalf("save_config lacks %s:\n%s", s, saved)
		}
	}
	e := StartDaemon(t, DaemonOpts{Bare: true})
	if skipped, err := e.Client(t).LoadConfig(saved); err != nil || len(skipped) != 0 {
		t.Fatalf("load_config: skipped %v, err %v", skipped, err)
	}
	check(e, "after load_config")
	e.Stop(t)

	// The config alone: serve --config over a wiped cache device.
	if err := os.Truncate(cacheFile, 0); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(cacheFile, cacheBytes); err != nil {
		t.Fatal(err)
	}
	f := StartDaemon(t, DaemonOpts{Bare: true, Config: writeFile(t, files, "saved.json", saved)})
	if strings.Contains(f.Stderr(), "cache loaded") || !strings.Contains(f.Stderr(), "cache started") {
		t.Fatalf("serve --config over a wiped cache device did not start a fresh cache:\n%s", f.Stderr())
	}
	check(f, "from serve --config over a wiped cache")
	f.Stop(t)
}
