package e2e

// rpc.py compatibility of the OCF methods (TestRPCCompat): create and its
// refusals, shared caches, statistics, modes, flushes, policies, a vbdev
// waiting for its cache, the 2020 names and hot-removal of its bases.

import (
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// compatOCF runs the OCF steps in order on one daemon: each builds on the
// vbdevs the one before left.
func compatOCF(t *testing.T, d *Daemon) {
	ocfCompatCreate(t, d)
	uri := ocfCompatStats(t, d)
	ocfCompatModeAndFlush(t, d, uri)
	// Policies (policies_test.go), on the two vbdevs sharing Cache0.
	checkPolicyMethods(t, d, "Ocf0", "Ocf1")
	ocfCompatWaiting(t, d)
	ocfCompatHotRemove(t, d, uri)
}

// ocfCompatCreate creates Ocf0 (Cache0, Core0) and Ocf1 (Cache0, Core1)
// after the refused creates, and checks the vbdev as bdev_get_bdevs and
// bdev_ocf_get_bdevs show it.
func ocfCompatCreate(t *testing.T, d *Daemon) {
	for _, b := range []struct {
		name string
		mib  int
	}{{"Cache0", 16}, {"Core0", 32}, {"Core1", 16}, {"Core2", 8}} {
		d.Call(t, "bdev_malloc_create", mallocParams(b.name, b.mib, 512))
	}
	var name string
	d.CallInto(t, "bdev_ocf_create", ocfParams("Ocf0", "wt", "Cache0", "Core0", 16), &name)
	if name != "Ocf0" {
		t.Fatalf("bdev_ocf_create returned %q", name)
	}
	d.expectError(t, "bdev_ocf_create", ocfParams("Ocf0", "wt", "Cache0", "Core2", 16), -32603, "Could not create OCF vbdev: -1")
	d.expectError(t, "bdev_ocf_create", ocfParams("Core2", "wt", "Cache0", "Core2", 16), -32603, "Could not create OCF vbdev: -1")
	d.expectError(t, "bdev_ocf_create", ocfParams("OcfX", "xx", "Cache0", "Core2", 16), -32603, "Could not create OCF vbdev: -22")
	d.expectError(t, "bdev_ocf_create", ocfParams("OcfX", "wt", "Cache0", "Core2", 3), -32603, "Could not create OCF vbdev: -22")
	d.expectError(t, "bdev_ocf_create", map[string]any{"name": "OcfX", "cache_bdev_name": "Cache0", "core_bdev_name": "Core2"}, -32602, "Invalid parameters")
	bad := ocfParams("OcfX", "wt", "Cache0", "Core2", 16)
	bad["bogus"] = 1
	d.expectError(t, "bdev_ocf_create", bad, -32602, "Invalid parameters")
	if got := d.ocfBdevs(t, ""); len(got) != 1 {
		t.Fatalf("failed creates left vbdevs behind: %+v", got)
	}
	d.expectClaimed(t, "Core2", false)

	b, raw := d.getBdev(t, "Ocf0")
	if (b.ProductName != "SPDK OCF" && !strings.Contains(b.ProductName, "blockcache")) || b.BlockSize != 512 || b.NumBlocks != 65536 ||
		b.UUID == "" || !slices.Contains(b.Aliases, strings.ToLower(b.UUID)) || b.Claimed ||
		!b.SupportedIOTypes["read"] || !b.SupportedIOTypes["write"] || !b.SupportedIOTypes["flush"] {
		t.Fatalf("OCF vbdev: %s", raw)
	}
	expectPrefixJSON(t, "OCF driver_specific", b.DriverSpecific,
		`{"cache_device":"Cache0","core_device":"Core0","mode":"wt","cache_line_size":16,"metadata_volatile":false}`)
	d.expectClaimed(t, "Cache0", true)
	d.expectClaimed(t, "Core0", true)
	d.expectError(t, "nbd_start_disk", map[string]any{"bdev_name": "Core0"}, -1, "Operation not permitted")
	d.expectError(t, "bdev_error_create", map[string]any{"base_name": "Cache0"}, -1, "Operation not permitted")
	d.expectError(t, "bdev_ocf_create", ocfParams("OcfX", "wt", "Core2", "Core0", 0), -32603, "Could not create OCF vbdev: -1")

	// Shared cache: a second core on Cache0.
	d.Call(t, "bdev_ocf_create", ocfParams("Ocf1", "wt", "Cache0", "Core1", 16))
	expectPrefixJSON(t, "bdev_ocf_get_bdevs Cache0", d.Call(t, "bdev_ocf_get_bdevs", map[string]any{"name": "Cache0"}),
		`[{"name":"Ocf0","started":true,"cache":{"name":"Cache0","attached":true},"core":{"name":"Core0","attached":true}},
		  {"name":"Ocf1","started":true,"cache":{"name":"Cache0","attached":true},"core":{"name":"Core1","attached":true}}]`)
	if got := d.ocfBdevs(t, "Core1"); len(got) != 1 || got[0].Name != "Ocf1" {
		t.Fatalf("bdev_ocf_get_bdevs Core1: %+v", got)
	}
	if got := d.ocfBdevs(t, "Ocf0"); len(got) != 1 || got[0].Name != "Ocf0" {
		t.Fatalf("bdev_ocf_get_bdevs Ocf0: %+v", got)
	}
	d.expectError(t, "bdev_ocf_get_bdevs", map[string]any{"name": "Nope"}, -32602, "No such device")
	var viaAlias []ocfBdev
	d.CallInto(t, "get_ocf_bdevs", nil, &viaAlias)
	if len(viaAlias) != 2 {
		t.Fatalf("get_ocf_bdevs (alias): %+v", viaAlias)
	}
}

// ocfCompatStats exports Ocf0, writes and reads it, and checks
// bdev_ocf_get_stats and its reset. It returns the export's URI.
func ocfCompatStats(t *testing.T, d *Daemon) string {
	var uri string
	d.CallInto(t, "nbd_start_disk", map[string]any{"bdev_name": "Ocf0"}, &uri)
	qemuIO(t, uri, "write -P 0x33 0 1m", "read -P 0x33 0 1m", "read -P 0 4m 1m")
	raw := d.Call(t, "bdev_ocf_get_stats", map[string]any{"name": "Ocf0"})
	checkStatsShape(t, raw)
	var s ocfStats
	json.Unmarshal(raw, &s)
	if s.Usage.Occupancy.Count == 0 || s.Requests.WrTotal.Count == 0 || s.Requests.RdTotal.Count == 0 ||
		s.Requests.Total.Percentage != "100.0" {
		t.Fatalf("stats after IO: %s", raw)
	}
	if got := d.Call(t, "get_ocf_stats", map[string]any{"name": "Ocf0"}); compactJSON(t, got) != compactJSON(t, raw) {
		t.Fatalf("get_ocf_stats (alias) differs:\n%s\n%s", got, raw)
	}
	d.expectError(t, "bdev_ocf_get_stats", map[string]any{"name": "Nope"}, -32602, "No such device")
	d.expectError(t, "bdev_ocf_get_stats", nil, -32602, "Invalid parameters")
	expectJSON(t, "bdev_ocf_reset_stats", d.Call(t, "bdev_ocf_reset_stats", map[string]any{"name": "Ocf0"}), "true")
	if s := d.stats(t, "Ocf0"); s.Requests.Total.Count != 0 || s.Requests.Total.Percentage != "0.0" || s.Usage.Occupancy.Count == 0 {
		t.Fatalf("stats after reset: %+v", s)
	}
	d.expectError(t, "bdev_ocf_reset_stats", map[string]any{"name": "Nope"}, -32602, "No such device")
	return uri
}

// ocfCompatModeAndFlush: mode changes show in bdev_get_bdevs and the
// config, for every vbdev on the cache; a background flush writes the
// dirty data back; then fallback pass-through and flush cancel.
func ocfCompatModeAndFlush(t *testing.T, d *Daemon, uri string) {
	var mode string
	d.CallInto(t, "bdev_ocf_set_cache_mode", map[string]any{"name": "Ocf0", "mode": "wb"}, &mode)
	if mode != "wb" {
		t.Fatalf("bdev_ocf_set_cache_mode returned %q", mode)
	}
	d.expectError(t, "bdev_ocf_set_cache_mode", map[string]any{"name": "Ocf0", "mode": "xx"}, -32603, "Could not change OCF vbdev cache mode: -22")
	d.expectError(t, "bdev_ocf_set_cache_mode", map[string]any{"name": "Nope", "mode": "wt"}, -32602, "No such device")
	for _, v := range []string{"Ocf0", "Ocf1"} {
		b, _ := d.getBdev(t, v)
		var ds ocfDriverSpecific
		json.Unmarshal(b.DriverSpecific, &ds)
		if ds.Mode != "wb" {
			t.Fatalf("%s driver_specific after set_cache_mode wb: %s", v, b.DriverSpecific)
		}
	}
	// A background flush writes the dirty data back.
	qemuIO(t, uri, "write -P 0x34 2m 1m")
	if s := d.stats(t, "Ocf0"); s.Usage.Dirty.Count == 0 {
		t.Fatalf("no dirty data to flush in wb: %+v", s.Usage)
	}
	expectJSON(t, "bdev_ocf_flush_start", d.Call(t, "bdev_ocf_flush_start", map[string]any{"name": "Ocf0"}), "true")
	deadline := time.Now().Add(10 * time.Second)
	for {
		raw := d.Call(t, "bdev_ocf_flush_status", map[string]any{"name": "Ocf0"})
		var st struct {
			InProgress bool   `json:"in_progress"`
			Status     *int32 `json:"status"`
		}
		json.Unmarshal(raw, &st)
		keys := objectKeys(t, raw)
		if st.InProgress {
			if len(keys) == 0 || keys[0] != "in_progress" || slices.Contains(keys, "status") {
				t.Fatalf("bdev_ocf_flush_status while flushing: %s", raw)
			}
			if time.Now().After(deadline) {
				t.Fatalf("flush still in progress after 10 s: %s", raw)
			}
			time.Sleep(20 * time.Millisecond)
			continue
		}
		if len(keys) < 2 || keys[0] != "in_progress" || keys[1] != "status" || st.Status == nil || *st.Status != 0 {
			t.Fatalf("bdev_ocf_flush_status when done: %s, want in_progress false and status 0 first", raw)
		}
		break
	}
	if s := d.stats(t, "Ocf0"); s.Usage.Dirty.Count != 0 {
		t.Fatalf("%d dirty blocks after the flush finished", s.Usage.Dirty.Count)
	}
	expectJSON(t, "bdev_ocf_set_fallback_pt", d.Call(t, "bdev_ocf_set_fallback_pt", map[string]any{"name": "Ocf0", "threshold": 5}), "true")
	if b, _ := d.getBdev(t, "Ocf0"); !strings.Contains(string(b.DriverSpecific), `"fallback_pt_threshold":5`) {
		t.Fatalf("driver_specific after bdev_ocf_set_fallback_pt: %s", b.DriverSpecific)
	}
	d.expectError(t, "bdev_ocf_flush_start", map[string]any{"name": "Nope"}, -32602, "No such device")
	d.expectError(t, "bdev_ocf_flush_status", map[string]any{"name": "Nope"}, -32602, "No such device")
	d.expectError(t, "bdev_ocf_flush_start", map[string]any{}, -32602, "Invalid parameters")
	// Nothing to cancel (flushcancel_test.go cancels a running one).
	expectJSON(t, "bdev_ocf_flush_cancel", d.Call(t, "bdev_ocf_flush_cancel", map[string]any{"name": "Ocf0"}), "false")
	d.expectError(t, "bdev_ocf_flush_cancel", map[string]any{"name": "Nope"}, -32602, "No such device")
	d.expectError(t, "bdev_ocf_flush_cancel", map[string]any{}, -32602, "Invalid parameters")
	expectJSON(t, "Ocf0 config entry", d.configEntry(t, "bdev_ocf_create", "name", "Ocf0"),
		`{"name":"Ocf0","mode":"wb","cache_line_size":16,"cache_bdev_name":"Cache0","core_bdev_name":"Core0"}`)
	checkConfigOrder(t, d.configEntries(t, "bdev"))
}

// ocfCompatWaiting: a vbdev waiting for its cache refuses what needs a
// running cache and starts when the cache appears; the 2020 names create
// and delete too.
func ocfCompatWaiting(t *testing.T, d *Daemon) {
	var name string
	d.CallInto(t, "bdev_ocf_create", ocfParams("Wait0", "wt", "LateCache", "Core2", 0), &name)
	if name != "Wait0" {
		t.Fatalf("bdev_ocf_create of a waiting vbdev returned %q", name)
	}
	expectPrefixJSON(t, "waiting vbdev", d.Call(t, "bdev_ocf_get_bdevs", map[string]any{"name": "LateCache"}),
		`[{"name":"Wait0","started":false,"cache":{"name":"LateCache","attached":false},"core":{"name":"Core2","attached":true}}]`)
	d.expectClaimed(t, "Core2", true)
	d.expectError(t, "bdev_get_bdevs", map[string]any{"name": "Wait0"}, -19, "No such device")
	if je := d.CallErr(t, "bdev_ocf_get_stats", map[string]any{"name": "Wait0"}); je.Code != -32603 || !strings.HasPrefix(je.Message, "Could not get stats: ") {
		t.Fatalf("bdev_ocf_get_stats of a waiting vbdev: %+v", je)
	}
	for _, e := range d.configEntries(t, "bdev") {
		if strings.Contains(string(e), `"Wait0"`) {
			t.Fatalf("a vbdev that has not started is in the config: %s", e)
		}
	}
	d.expectError(t, "bdev_ocf_flush_start", map[string]any{"name": "Wait0"}, -32602, "Couldn't flush cache: device not attached")
	d.expectError(t, "bdev_ocf_set_fallback_pt", map[string]any{"name": "Wait0", "threshold": 5}, -32603, "Could not set fallback pass-through threshold: -19")
	checkPolicyMethodsNotStarted(t, d, "Wait0")
	d.expectError(t, "bdev_ocf_create", ocfParams("Wait0", "wt", "LateCache", "Core2", 0), -32603, "Could not create OCF vbdev: -1")
	d.Call(t, "bdev_malloc_create", mallocParams("LateCache", 8, 512))
	if got := d.ocfBdevs(t, "Wait0"); len(got) != 1 || !got[0].Started || !got[0].Cache.Attached {
		t.Fatalf("Wait0 after its cache appeared: %+v", got)
	}
	b, _ := d.getBdev(t, "Wait0")
	expectPrefixJSON(t, "Wait0 driver_specific", b.DriverSpecific,
		`{"cache_device":"LateCache","core_device":"Core2","mode":"wt","cache_line_size":4,"metadata_volatile":false}`)
	d.expectClaimed(t, "LateCache", true)
	expectJSON(t, "bdev_ocf_delete", d.Call(t, "bdev_ocf_delete", map[string]any{"name": "Wait0"}), "true")
	d.expectError(t, "bdev_ocf_delete", map[string]any{"name": "Wait0"}, -32602, "No such device")
	d.expectError(t, "bdev_ocf_get_bdevs", map[string]any{"name": "Wait0"}, -32602, "No such device")
	d.expectError(t, "bdev_get_bdevs", map[string]any{"name": "Wait0"}, -19, "No such device")
	d.expectClaimed(t, "LateCache", false)
	d.expectClaimed(t, "Core2", false)

	// The 2020 names create and delete too.
	d.Call(t, "construct_ocf_bdev", ocfParams("Old0", "pt", "LateCache", "Core2", 0))
	if got := d.ocfBdevs(t, "Old0"); len(got) != 1 || !got[0].Started {
		t.Fatalf("construct_ocf_bdev: %+v", got)
	}
	d.Call(t, "delete_ocf_bdev", map[string]any{"name": "Old0"})
	d.expectClaimed(t, "Core2", false)
}

// ocfCompatHotRemove removes Core1, then Cache0 under Ocf0's export at
// uri, and deletes the bases left.
func ocfCompatHotRemove(t *testing.T, d *Daemon, uri string) {
	// Hot-remove of a core: its volume goes, the vbdev waits for the
	// core on the shared cache, which stays.
	d.Call(t, "bdev_malloc_delete", map[string]any{"name": "Core1"})
	d.expectError(t, "bdev_get_bdevs", map[string]any{"name": "Ocf1"}, -19, "No such device")
	if got := d.ocfBdevs(t, ""); len(got) != 2 || got[0].Name != "Ocf0" || !got[0].Started ||
		got[1].Name != "Ocf1" || got[1].Started || got[1].Core.Attached || !got[1].Cache.Attached {
		t.Fatalf("vbdevs after removing Core1: %+v", got)
	}
	d.expectClaimed(t, "Cache0", true)
	qemuIO(t, uri, "read -P 0x33 0 1m")

	// Hot-remove of the cache under an export: the vbdevs (the waiting
	// Ocf1 too) and the export go, the core is released.
	d.Call(t, "bdev_malloc_delete", map[string]any{"name": "Cache0"})
	d.expectError(t, "bdev_get_bdevs", map[string]any{"name": "Ocf0"}, -19, "No such device")
	if got := d.ocfBdevs(t, ""); len(got) != 0 {
		t.Fatalf("vbdevs after removing Cache0: %+v", got)
	}
	d.expectClaimed(t, "Core0", false)
	var disks []nbdDisk
	d.CallInto(t, "nbd_get_disks", nil, &disks)
	if len(disks) != 0 {
		t.Fatalf("exports after the exported vbdev was hot-removed: %+v", disks)
	}
	for _, n := range []string{"Core0", "Core2", "LateCache"} {
		d.Call(t, "bdev_malloc_delete", map[string]any{"name": n})
	}
}

var percentRE = regexp.MustCompile(`^[0-9]+\.[0-9]{1,2}$`)

// checkStatsShape checks bdev_ocf_get_stats' groups, keys and leaves in
// rpc.md's order.
func checkStatsShape(t *testing.T, raw json.RawMessage) {
	t.Helper()
	groups := []struct {
		name  string
		keys  []string
		units string
	}{
		{"usage", []string{"occupancy", "free", "clean", "dirty"}, "4KiB blocks"},
		{"requests", []string{"rd_hits", "rd_partial_misses", "rd_full_misses", "rd_total", "wr_hits",
			"wr_partial_misses", "wr_full_misses", "wr_total", "rd_pt", "wr_pt", "serviced", "total"}, "Requests"},
		{"blocks", []string{"core_volume_rd", "core_volume_wr", "core_volume_total", "cache_volume_rd", "cache_volume_wr",
			"cache_volume_total", "volume_rd", "volume_wr", "volume_total"}, "4KiB blocks"},
		{"errors", []string{"core_volume_rd", "core_volume_wr", "core_volume_total", "cache_volume_rd", "cache_volume_wr",
			"cache_volume_total", "total"}, "Requests"},
	}
	if k := objectKeys(t, raw); !slices.Equal(k, []string{"usage", "requests", "blocks", "errors"}) {
		t.Fatalf("stats groups %v", k)
	}
	for _, g := range groups {
		graw := member(t, raw, g.name)
		if k := objectKeys(t, graw); !slices.Equal(k, g.keys) {
			t.Fatalf("stats %s keys\n got %v\nwant %v", g.name, k, g.keys)
		}
		for _, k := range g.keys {
			leaf := member(t, graw, k)
			if lk := objectKeys(t, leaf); !slices.Equal(lk, []string{"count", "percentage", "units"}) {
				t.Fatalf("stats %s.%s keys %v", g.name, k, lk)
			}
			var l statLeaf
			if err := json.Unmarshal(leaf, &l); err != nil {
				t.Fatalf("stats %s.%s: %v: %s", g.name, k, err, leaf)
			}
			if !percentRE.MatchString(l.Percentage) || l.Units != g.units {
				t.Fatalf("stats %s.%s: %s", g.name, k, leaf)
			}
		}
	}
	// usage percentages are of the cache size: occupancy + free.
	var u struct {
		Occupancy, Free statLeaf
	}
	json.Unmarshal(member(t, raw, "usage"), &u)
	if total := u.Occupancy.Count + u.Free.Count; total != 0 {
		f := u.Occupancy.Count * 10000 / total
		if want := fmt.Sprintf("%d.%d", f/100, f%100); u.Occupancy.Percentage != want {
			t.Fatalf("occupancy %d of %d: percentage %q, want %q", u.Occupancy.Count, total, u.Occupancy.Percentage, want)
		}
	}
}

// checkConfigOrder checks that every bdev_ocf_create entry comes after the
// create entries of its bases, and that the list ends with
// bdev_wait_for_examine.
func checkConfigOrder(t *testing.T, entries []json.RawMessage) {
	t.Helper()
	seen := map[string]bool{}
	for i, e := range entries {
		var m struct {
			Method string         `json:"method"`
			Params map[string]any `json:"params"`
		}
		json.Unmarshal(e, &m)
		if i == len(entries)-1 {
			if m.Method != "bdev_wait_for_examine" || m.Params != nil {
				t.Fatalf("bdev config ends with %s", e)
			}
			break
		}
		if m.Method == "bdev_ocf_create" {
			for _, k := range []string{"cache_bdev_name", "core_bdev_name"} {
				if !seen[fmt.Sprint(m.Params[k])] {
					t.Fatalf("%s comes before the entry creating its %s", e, k)
				}
			}
		}
		if n, ok := m.Params["name"].(string); ok {
			seen[n] = true
		}
	}
}
