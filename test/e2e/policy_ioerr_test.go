package e2e

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// TestPolicyChangeMetadataWriteFails: when the cache device fails the
// metadata write of a policy, cache mode or fallback threshold change, each
// set method answers -32603 with -5 (EIO) and the write's error as data,
// the settings in force stay the old ones, and the same change succeeds
// once the device works again.
func TestPolicyChangeMetadataWriteFails(t *testing.T) {
	t.Parallel()
	d := StartDaemon(t, DaemonOpts{Bare: true})
	d.Call(t, "bdev_malloc_create", mallocParams("PolBase", 8, 512))
	d.Call(t, "bdev_malloc_create", mallocParams("PolCore", 16, 512))
	d.Call(t, "bdev_error_create", map[string]any{"base_name": "PolBase"})
	d.Call(t, "bdev_ocf_create", ocfParams("PolVol", "wt", "EE_PolBase", "PolCore", 0))
	before := d.policiesRaw(t, "PolVol")
	if before != defaultPolicies {
		t.Fatalf("policies of a fresh cache: %s, want %s", before, defaultPolicies)
	}
	for _, c := range []struct {
		method  string
		params  map[string]any
		message string
	}{
		{"bdev_ocf_set_cleaning", map[string]any{"name": "PolVol", "policy": "acp", "acp_wake_up": 50, "max_inflight": 4},
			"Could not set cleaning policy: -5"},
		{"bdev_ocf_set_promotion", map[string]any{"name": "PolVol", "policy": "nhit", "insertion_threshold": 7, "trigger_threshold": 0},
			"Could not set promotion policy: -5"},
		{"bdev_ocf_set_seqcutoff", map[string]any{"name": "PolVol", "policy": "never", "threshold": 64, "promotion_count": 2},
			"OCF could not set sequential cutoff parameters: -5"},
	} {
		d.Call(t, "bdev_error_inject_error", map[string]any{"name": "EE_PolBase", "io_type": "write", "error_type": "failure", "num": 1})
		je := d.expectError(t, c.method, c.params, -32603, c.message)
		if !strings.Contains(je.Data, "superblock") || !strings.Contains(je.Data, "PolVol") {
			t.Errorf("%s with the metadata write failing: data %q, want the vbdev and the failed superblock write named", c.method, je.Data)
		}
		if got := d.policiesRaw(t, "PolVol"); got != before {
			t.Fatalf("%s failed but changed the policies:\n got %s\nwant %s", c.method, got, before)
		}
		expectJSON(t, c.method, d.Call(t, c.method, c.params), "true")
		after := d.policiesRaw(t, "PolVol")
		if after == before {
			t.Fatalf("%s succeeded once the device worked, but the policies did not change: %s", c.method, after)
		}
		before = after
	}
	want := `{"cleaning":{"policy":"acp","alru":{"wake_up":20,"staleness_time":120,"flush_max_buffers":100,"activity_threshold":10000,"max_dirty_ratio":80},` +
		`"acp":{"wake_up":50,"flush_max_buffers":128},"max_inflight":4},` +
		`"promotion":{"policy":"nhit","nhit":{"insertion_threshold":7,"trigger_threshold":0}},` +
		`"seqcutoff":{"policy":"never","threshold":64,"promotion_count":2}}`
	if before != want {
		t.Fatalf("policies after the changes:\n got %s\nwant %s", before, want)
	}

	// The cache mode and the fallback pass-through threshold, likewise, as
	// bdev_get_bdevs shows them.
	settings := func() string {
		b, _ := d.getBdev(t, "PolVol")
		var ds struct {
			Mode      string `json:"mode"`
			Threshold uint32 `json:"fallback_pt_threshold"`
		}
		if err := json.Unmarshal(b.DriverSpecific, &ds); err != nil {
			t.Fatalf("driver_specific %s: %v", b.DriverSpecific, err)
		}
		return fmt.Sprintf("mode %s, fallback_pt_threshold %d", ds.Mode, ds.Threshold)
	}
	if got := settings(); got != "mode wt, fallback_pt_threshold 0" {
		t.Fatalf("settings of a fresh cache: %s", got)
	}
	for _, c := range []struct {
		method  string
		params  map[string]any
		message string
		result  string
		after   string
	}{
		{"bdev_ocf_set_cache_mode", map[string]any{"name": "PolVol", "mode": "wb"},
			"Could not change OCF vbdev cache mode: -5", `"wb"`, "mode wb, fallback_pt_threshold 0"},
		{"bdev_ocf_set_fallback_pt", map[string]any{"name": "PolVol", "threshold": 9},
			"Could not set fallback pass-through threshold: -5", "true", "mode wb, fallback_pt_threshold 9"},
	} {
		old := settings()
		d.Call(t, "bdev_error_inject_error", map[string]any{"name": "EE_PolBase", "io_type": "write", "error_type": "failure", "num": 1})
		je := d.expectError(t, c.method, c.params, -32603, c.message)
		if !strings.Contains(je.Data, "superblock") || !strings.Contains(je.Data, "PolVol") {
			t.Errorf("%s with the metadata write failing: data %q, want the vbdev and the failed superblock write named", c.method, je.Data)
		}
		if got := settings(); got != old {
			t.Fatalf("%s failed but changed the settings: %s, want %s", c.method, got, old)
		}
		expectJSON(t, c.method, d.Call(t, c.method, c.params), c.result)
		if got := settings(); got != c.after {
			t.Fatalf("%s once the device works: %s, want %s", c.method, got, c.after)
		}
	}
}
