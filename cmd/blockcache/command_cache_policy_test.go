package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// policyRows returns the policies table as "POLICY PARAMETER" → VALUE,
// checking the header and that no row is repeated.
func policyRows(t *testing.T, out string) map[string]string {
	t.Helper()
	rows := table(out)
	if len(rows) == 0 || !slices.Equal(rows[0], []string{"POLICY", "PARAMETER", "VALUE"}) {
		t.Fatalf("cache policies: header %q in\n%s", rows[0], out)
	}
	m := map[string]string{}
	for _, r := range rows[1:] {
		if len(r) != 3 {
			t.Fatalf("cache policies: row %q in\n%s", r, out)
		}
		k := r[0] + " " + r[1]
		if _, dup := m[k]; dup {
			t.Fatalf("cache policies: row %q twice in\n%s", k, out)
		}
		m[k] = r[2]
	}
	return m
}

// checkPolicyRows checks the rows named in want (and that there are 15).
func checkPolicyRows(t *testing.T, out string, want map[string]string) {
	t.Helper()
	got := policyRows(t, out)
	if len(got) != 15 {
		t.Errorf("cache policies: %d rows, want 15:\n%s", len(got), out)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("cache policies: %q = %q, want %q, in\n%s", k, got[k], v, out)
		}
	}
}

var defaultPolicyRows = map[string]string{
	"cleaning policy":                  "alru",
	"cleaning alru-wake-up":            "20 s",
	"cleaning alru-staleness-time":     "120 s",
	"cleaning alru-flush-max-buffers":  "100 lines",
	"cleaning alru-activity-threshold": "10000 ms",
	"cleaning alru-max-dirty-ratio":    "80 %",
	"cleaning acp-wake-up":             "10 ms",
	"cleaning acp-flush-max-buffers":   "128 lines",
	"cleaning max-inflight":            "32 lines",
	"promotion policy":                 "always",
	"promotion insertion-threshold":    "3",
	"promotion trigger-threshold":      "80 %",
	"seqcutoff policy":                 "full",
	"seqcutoff threshold-kib":          "1 KiB",
	"seqcutoff promotion-count":        "8",
}

func TestCachePolicyCommands(t *testing.T) {
	d := startDaemon(t)
	d.malloc(t, "M0", 8192, 512)  // cache, 4 MiB
	d.malloc(t, "M1", 16384, 512) // core, 8 MiB
	d.malloc(t, "M2", 16384, 512) // core, 8 MiB
	d.ok(t, "cache", "create", "C0", "--cache", "M0", "--core", "M1")
	d.ok(t, "cache", "create", "C1", "--cache", "M0", "--core", "M2")

	checkPolicyRows(t, d.ok(t, "cache", "policies", "C0"), defaultPolicyRows)
	var js struct {
		Cleaning  map[string]json.RawMessage `json:"cleaning"`
		SeqCutoff struct {
			Threshold int `json:"threshold"`
		} `json:"seqcutoff"`
	}
	out := d.ok(t, "cache", "policies", "C0", "--json")
	if err := json.Unmarshal([]byte(out), &js); err != nil || string(js.Cleaning["policy"]) != `"alru"` || js.SeqCutoff.Threshold != 1 {
		t.Errorf("cache policies --json: %v\n%s", err, out)
	}
	if k := orderedKeys(t, out); !slices.Equal(k, []string{"cleaning", "promotion", "seqcutoff"}) {
		t.Errorf("cache policies --json keys %q", k)
	}

	// set-seqcutoff: the volume's own; flags not given are unchanged.
	if got := d.ok(t, "cache", "set-seqcutoff", "C0", "--policy", "always", "--threshold-kib", "256", "--promotion-count", "3"); got != "" {
		t.Errorf("cache set-seqcutoff printed %q", got)
	}
	d.ok(t, "cache", "set-seqcutoff", "C0", "--policy", "never")
	checkPolicyRows(t, d.ok(t, "cache", "policies", "C0"),
		map[string]string{"seqcutoff policy": "never", "seqcutoff threshold-kib": "256 KiB", "seqcutoff promotion-count": "3"})
	checkPolicyRows(t, d.ok(t, "cache", "policies", "C1"), defaultPolicyRows)

	// set-cleaning and set-promotion: the cache's, so C1 sees them.
	d.ok(t, "cache", "set-cleaning", "C0", "--policy", "acp", "--acp-wake-up", "0", "--acp-flush-max-buffers", "512", "--alru-staleness-time", "30",
		"--alru-max-dirty-ratio", "40", "--max-inflight", "8")
	d.ok(t, "cache", "set-promotion", "C0", "--policy", "nhit", "--trigger-threshold", "0")
	d.ok(t, "cache", "set-promotion", "C1", "--policy", "nhit", "--insertion-threshold", "9")
	want := map[string]string{}
	for k, v := range defaultPolicyRows {
		want[k] = v
	}
	for k, v := range map[string]string{
		"cleaning policy": "acp", "cleaning acp-wake-up": "0 ms", "cleaning acp-flush-max-buffers": "512 lines",
		"cleaning alru-staleness-time": "30 s", "cleaning alru-max-dirty-ratio": "40 %", "cleaning max-inflight": "8 lines",
		"promotion policy": "nhit", "promotion insertion-threshold": "9", "promotion trigger-threshold": "0 %",
	} {
		want[k] = v
	}
	checkPolicyRows(t, d.ok(t, "cache", "policies", "C1"), want)

	// Bad values: policies are checked here, ranges by the daemon.
	d.fails(t, []string{"cache", "set-seqcutoff", "C0", "--policy", "sometimes"}, `cache set-seqcutoff C0: --policy: unknown sequential cutoff policy "sometimes": use always, full, never`)
	d.fails(t, []string{"cache", "set-seqcutoff", "C0"}, `required flag(s) "policy" not set`)
	d.fails(t, []string{"cache", "set-seqcutoff", "C0", "--policy", "full", "--threshold-kib", "4194305"},
		"cache set-seqcutoff C0: OCF could not set sequential cutoff parameters: -22 (code -32603): threshold 4194305 KiB out of range (allowed 1..4194304 KiB")
	d.fails(t, []string{"cache", "set-seqcutoff", "C0", "--policy", "full", "--promotion-count", "70000"}, "promotion_count 70000 out of range (allowed 1..65535")
	d.fails(t, []string{"cache", "set-seqcutoff", "C0", "--policy", "full", "--threshold-kib", "-1"}, `invalid argument "-1" for "--threshold-kib"`)
	d.fails(t, []string{"cache", "set-cleaning", "C0", "--policy", "lru"}, `unknown cleaning policy "lru": use alru, acp, nop`)
	d.fails(t, []string{"cache", "set-cleaning", "C0", "--policy", "alru", "--alru-wake-up", "3601"},
		"cache set-cleaning C0: alru_wake_up 3601 s out of range (allowed 0..3600 s) (code -32602)")
	d.fails(t, []string{"cache", "set-cleaning", "C0", "--policy", "acp", "--acp-flush-max-buffers", "0"}, "acp_flush_max_buffers", "(allowed 1..10000)")
	d.fails(t, []string{"cache", "set-cleaning", "C0", "--policy", "alru", "--alru-max-dirty-ratio", "101"}, "alru_max_dirty_ratio 101% out of range (allowed 0..100%)")
	d.fails(t, []string{"cache", "set-cleaning", "C0", "--policy", "alru", "--max-inflight", "0"}, "max_inflight 0 out of range (allowed 1..1024)")
	d.fails(t, []string{"cache", "set-promotion", "C0", "--policy", "nhit", "--insertion-threshold", "1"},
		"cache set-promotion C0: insertion_threshold 1 out of range (allowed 2..1000) (code -32602)")
	d.fails(t, []string{"cache", "set-promotion", "C0", "--policy", "nhit", "--trigger-threshold", "101"}, "trigger_threshold 101% out of range (allowed 0..100%)")
	d.fails(t, []string{"cache", "set-promotion", "C0", "--policy", "sometimes"}, `unknown promotion policy "sometimes": use always, nhit`)
	d.fails(t, []string{"cache", "set-cleaning", "C9", "--policy", "nop"}, "cache set-cleaning C9: No such device")
	d.fails(t, []string{"cache", "set-promotion", "C9", "--policy", "always"}, "cache set-promotion C9: No such device")
	d.fails(t, []string{"cache", "set-seqcutoff", "C9", "--policy", "full"}, "cache set-seqcutoff C9: No such device")
	d.fails(t, []string{"cache", "policies", "C9"}, "cache policies C9: No such device")
	d.fails(t, []string{"cache", "policies"}, "accepts 1 arg(s), received 0")
	checkPolicyRows(t, d.ok(t, "cache", "policies", "C1"), want) // the failures changed nothing

	// The config the daemon saves restores them.
	cfg := filepath.Join(t.TempDir(), "saved.json")
	d.ok(t, "config", "save", "-o", cfg)
	saved, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"bdev_ocf_set_seqcutoff", "bdev_ocf_set_cleaning", "bdev_ocf_set_promotion"} {
		if strings.Count(string(saved), `"`+m+`"`) != 1 {
			t.Errorf("saved config has not one %s entry:\n%s", m, saved)
		}
	}
	// A fresh daemon: new malloc bdevs, so fresh caches, and the policies
	// from the config alone.
	d2 := startDaemon(t)
	if r := runCLI(t, string(saved), "config", "load", "-", "-s", d2.sock); r.code != 0 {
		t.Fatalf("config load: exit %d, stderr %s", r.code, r.stderr)
	}
	checkPolicyRows(t, d2.ok(t, "cache", "policies", "C1"), want)
	checkPolicyRows(t, d2.ok(t, "cache", "policies", "C0"),
		map[string]string{"seqcutoff policy": "never", "seqcutoff threshold-kib": "256 KiB", "seqcutoff promotion-count": "3"})
}

// orderedKeys returns the top-level keys of a JSON object in order.
func orderedKeys(t *testing.T, out string) []string {
	t.Helper()
	ms, err := orderedObject(json.RawMessage(out))
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	var keys []string
	for _, m := range ms {
		keys = append(keys, m.Key)
	}
	return keys
}

func TestCachePolicyCommandsUnreachable(t *testing.T) {
	dir, err := os.MkdirTemp("", "bc-cli-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "nobody.sock")
	for _, args := range [][]string{
		{"cache", "set-seqcutoff", "C0", "--policy", "full"},
		{"cache", "set-cleaning", "C0", "--policy", "alru"},
		{"cache", "set-promotion", "C0", "--policy", "always"},
		{"cache", "policies", "C0"},
	} {
		checkFails(t, args, runCLI(t, "", append(args, "-s", sock)...), "blockcache: cannot reach the daemon at "+sock+":")
	}
}
