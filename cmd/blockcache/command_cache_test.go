package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"blockcache/internal/nbd/nbdclient"
)

// statLeaf is one leaf of bdev_ocf_get_stats.
type statLeaf struct {
	Count      uint64 `json:"count"`
	Percentage string `json:"percentage"`
	Units      string `json:"units"`
}

// statsJSON runs cache stats --json and checks its shape: the four groups
// in SPDK's order, every leaf with count, percentage and units.
func statsJSON(t *testing.T, d *testDaemon, name string) map[string]map[string]statLeaf {
	t.Helper()
	out := d.ok(t, "cache", "stats", name, "--json")
	groups, err := orderedObject(json.RawMessage(out))
	if err != nil {
		t.Fatalf("cache stats --json: %v\n%s", err, out)
	}
	var keys []string
	for _, g := range groups {
		keys = append(keys, g.Key)
	}
	if strings.Join(keys, ",") != "usage,requests,blocks,errors" {
		t.Errorf("cache stats --json groups %q", keys)
	}
	var stats map[string]map[string]statLeaf
	if err := json.Unmarshal([]byte(out), &stats); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"usage.occupancy", "usage.free", "usage.dirty", "requests.rd_hits", "requests.wr_total", "requests.serviced",
		"blocks.volume_wr", "blocks.core_volume_total", "errors.total"} {
		g, l, _ := strings.Cut(k, ".")
		if leaf, ok := stats[g][l]; !ok || leaf.Units == "" || leaf.Percentage == "" {
			t.Errorf("cache stats --json: %s is %+v (present %v)", k, leaf, ok)
		}
	}
	return stats
}

// statsRow returns the cells of the stats table row labelled label in the
// section titled section.
func statsRow(t *testing.T, out, section, label string) []string {
	t.Helper()
	in := false
	for _, line := range strings.Split(out, "\n") {
		cells := strings.Split(strings.Trim(line, "║ "), "│")
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		if len(cells) == 4 && cells[1] == "Count" {
			in = cells[0] == section
			continue
		}
		if in && len(cells) == 4 && cells[0] == label {
			return cells
		}
	}
	t.Fatalf("no row %q in section %q of\n%s", label, section, out)
	return nil
}

// nbdIO writes n 4 KiB blocks to the export and reads them back.
func nbdIO(t *testing.T, d *testDaemon, export string, n int) {
	t.Helper()
	c, err := nbdclient.Dial("tcp", d.nbdAddr, nbdclient.Options{Export: export})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Disconnect()
	for i := range n {
		buf := bytes.Repeat([]byte{byte('a' + i)}, 4096)
		if err := c.WriteAt(buf, uint64(i)*4096, 0); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, 4096)
		if err := c.ReadAt(got, uint64(i)*4096); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, buf) {
			t.Fatalf("block %d reads back differently", i)
		}
	}
}

func TestCacheCommands(t *testing.T) {
	d := startDaemon(t)
	d.malloc(t, "M0", 8192, 512)  // cache, 4 MiB
	d.malloc(t, "M1", 65536, 512) // core, 32 MiB

	if got := d.ok(t, "cache", "create", "C0", "--mode", "wt", "--cache", "M0", "--core", "M1", "--line-size-kib", "8"); got != "C0\n" {
		t.Errorf("cache create printed %q", got)
	}
	out := d.ok(t, "cache", "list")
	checkRowCount(t, out, 1)
	checkRow(t, out, "C0", "started", "wt", "8 KiB", "M0", "yes", "M1", "yes", "-")
	checkRow(t, d.ok(t, "cache", "list", "M0"), "C0", "started", "wt", "8 KiB", "M0", "yes", "M1", "yes", "-") // by cache name
	out = d.ok(t, "bdev", "list")
	checkRow(t, out, "M0", "Malloc disk", "4 MiB", "512", "yes")
	checkRow(t, out, "C0", "SPDK OCF", "32 MiB", "512", "no")
	var vbdevs []ocfBdev
	if err := json.Unmarshal([]byte(d.ok(t, "cache", "list", "--json")), &vbdevs); err != nil || len(vbdevs) != 1 || vbdevs[0].Core.Name != "M1" {
		t.Errorf("cache list --json: %+v, %v", vbdevs, err)
	}

	// A volume waiting for its core is listed as not started.
	if r := d.cli(t, "cache", "create", "C1", "--cache", "M0", "--core", "Later"); r.code != 0 || !strings.Contains(r.stderr, `waiting for core bdev "Later"`) {
		t.Fatalf("cache create on a missing core: exit %d, stderr %q", r.code, r.stderr)
	}
	checkRow(t, d.ok(t, "cache", "list", "C1"), "C1", "waiting", "-", "-", "M0", "yes", "Later", "no", "-")
	d.ok(t, "cache", "delete", "C1")

	d.fails(t, []string{"cache", "create", "C2", "--mode", "fast", "--cache", "M0", "--core", "M1"}, "unknown cache mode \"fast\"")
	d.fails(t, []string{"cache", "create", "C2", "--cache", "M0", "--core", "M1", "--line-size-kib", "3"}, "--line-size-kib must be 4, 8, 16, 32 or 64")
	d.fails(t, []string{"cache", "create", "C2", "--cache", "M0"}, `required flag(s) "core" not set`)
	d.fails(t, []string{"cache", "create", "C0", "--cache", "M0", "--core", "M1"}, "blockcache: cache create C0: Could not create OCF vbdev")
	d.fails(t, []string{"cache", "list", "nope"}, "cache list nope: No such device")

	// Stats, after some I/O through an export. No sequential cutoff: the
	// 4 MiB cache has fewer than 512 lines, so it counts as full, and the
	// default cutoff would send the consecutive requests pass-through.
	d.ok(t, "cache", "set-seqcutoff", "C0", "--policy", "never")
	d.ok(t, "export", "start", "C0")
	nbdIO(t, d, "C0", 4)
	d.ok(t, "export", "stop", "C0")
	stats := statsJSON(t, d, "C0")
	if stats["requests"]["wr_total"].Count != 4 || stats["requests"]["rd_total"].Count != 4 || stats["usage"]["occupancy"].Count == 0 {
		t.Errorf("stats after 4 writes and 4 reads: requests %+v, usage %+v", stats["requests"], stats["usage"])
	}
	table := d.ok(t, "cache", "stats", "C0")
	for _, s := range []string{"Usage statistics", "Request statistics", "Block statistics", "Error statistics"} {
		if !strings.Contains(table, "║ "+s+" ") {
			t.Errorf("cache stats: no section %q in\n%s", s, table)
		}
	}
	if !strings.Contains(table, "Cache mode       wt\n") || !strings.Contains(table, "Core device      M1\n") {
		t.Errorf("cache stats: header missing or wrong:\n%s", table)
	}
	for _, c := range []struct{ section, label, group, key string }{
		{"Usage statistics", "Occupancy", "usage", "occupancy"},
		{"Usage statistics", "Free", "usage", "free"},
		{"Request statistics", "Write total", "requests", "wr_total"},
		{"Request statistics", "Read total", "requests", "rd_total"},
		{"Request statistics", "Read hits", "requests", "rd_hits"},
		{"Block statistics", "Writes to exported object(s)", "blocks", "volume_wr"},
		{"Block statistics", "Writes to core(s)", "blocks", "core_volume_wr"},
		{"Error statistics", "Total errors", "errors", "total"},
	} {
		leaf := stats[c.group][c.key]
		want := []string{c.label, jsonNumber(leaf.Count), statPercent(leaf.Percentage), leaf.Units}
		if got := statsRow(t, table, c.section, c.label); strings.Join(got, "|") != strings.Join(want, "|") {
			t.Errorf("cache stats row %q = %q, want %q (JSON %+v)", c.label, got, want, leaf)
		}
	}

	// set-mode, seen by cache list, bdev list --json and stats.
	if got := d.ok(t, "cache", "set-mode", "C0", "wb"); got != "wb\n" {
		t.Errorf("cache set-mode printed %q", got)
	}
	checkRow(t, d.ok(t, "cache", "list"), "C0", "started", "wb", "8 KiB", "M0", "yes", "M1", "yes", "-")
	var bdevs []struct {
		DriverSpecific ocfDriverSpecific `json:"driver_specific"`
	}
	if err := json.Unmarshal([]byte(d.ok(t, "bdev", "list", "C0", "--json")), &bdevs); err != nil || len(bdevs) != 1 || bdevs[0].DriverSpecific.Mode != "wb" {
		t.Errorf("bdev list C0 --json after set-mode: %+v, %v", bdevs, err)
	}
	if !strings.Contains(d.ok(t, "cache", "stats", "C0"), "Cache mode       wb\n") {
		t.Error("cache stats does not show the new mode")
	}
	d.fails(t, []string{"cache", "set-mode", "C0", "wx"}, "unknown cache mode \"wx\"")
	d.fails(t, []string{"cache", "set-mode", "C9", "wt"}, "cache set-mode C9: No such device")

	// reset-stats.
	d.ok(t, "cache", "reset-stats", "C0")
	if stats := statsJSON(t, d, "C0"); stats["requests"]["wr_total"].Count != 0 || stats["blocks"]["volume_wr"].Count != 0 {
		t.Errorf("stats after reset-stats: %+v", stats["requests"]["wr_total"])
	}
	d.fails(t, []string{"cache", "reset-stats", "C9"}, "cache reset-stats C9: No such device")
	d.fails(t, []string{"cache", "stats", "C9"}, "cache stats C9: No such device")

	// delete releases the bases.
	d.ok(t, "cache", "delete", "C0")
	checkRowCount(t, d.ok(t, "cache", "list"), 0)
	checkRow(t, d.ok(t, "bdev", "list"), "M0", "Malloc disk", "4 MiB", "512", "no")
	d.fails(t, []string{"cache", "delete", "C0"}, "blockcache: cache delete C0: No such device")
}

func jsonNumber(n uint64) string {
	b, _ := json.Marshal(n)
	return string(b)
}
