package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// simSmall are flags for a generated trace small enough for race tests.
var simSmall = []string{"--requests", "2000", "--cache-mib", "2", "--ws-mib", "8"}

func simOK(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	r := runCLI(t, stdin, append([]string{"sim"}, args...)...)
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("blockcache sim %s: exit %d\nstderr: %s\nstdout: %s", strings.Join(args, " "), r.code, r.stderr, r.stdout)
	}
	return r.stdout
}

func TestSimTable(t *testing.T) {
	out := simOK(t, "", append([]string{"--gen", "scan", "--line-kib", "8"}, simSmall...)...)
	head, body, ok := strings.Cut(out, "\n\n")
	if !ok {
		t.Fatalf("no blank line between summary and table:\n%s", out)
	}
	for _, want := range []string{"trace: generated scan (seed 1, 2000 requests, working set 8 MiB, skew 0.9, 30% writes)", "2000 requests (", "cache: 2 MiB device, 8 KiB lines, ", "OPT (Belady, line accesses): "} {
		if !strings.Contains(head, want) {
			t.Errorf("summary lacks %q:\n%s", want, head)
		}
	}
	rows := table(body)
	want := []string{"mode", "promotion", "cutoff", "cleaning", "rd hit%", "hit%", "pt%", "line hit%", "OPT%", "core rd 4K", "core wr 4K", "dirty 4K"}
	if !reflect.DeepEqual(rows[0], want) {
		t.Fatalf("header %q, want %q", rows[0], want)
	}
	checkRowCount(t, body, 24)
	opt := rows[1][8]
	for _, r := range rows[1:] {
		if len(r) != len(want) {
			t.Fatalf("row %q", r)
		}
		if r[0] == "wt" && (r[3] != "-" || r[11] != "0") {
			t.Errorf("write-through row %q: want no cleaning, nothing dirty", r)
		}
		if r[8] != opt {
			t.Errorf("row %q: OPT %s, others %s", r, r[8], opt)
		}
	}
	// Rows come in the order of sim.Policies.
	if got := strings.Join(rows[7][:4], "/"); got != "wb/always/never/alru" {
		t.Errorf("row 7 is %s", got)
	}
}

type simJSONOut struct {
	Source  string           `json:"source"`
	Trace   map[string]any   `json:"trace"`
	Lines   int              `json:"lines"`
	OPT     map[string]any   `json:"opt"`
	Results []map[string]any `json:"results"`
}

func parseSimJSON(t *testing.T, out string) simJSONOut {
	t.Helper()
	var v simJSONOut
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("%v in\n%s", err, out)
	}
	return v
}

// TestSimSavedTrace: a generated trace saved with --save-trace and replayed
// with --trace (from a file or stdin) gives the same report.
func TestSimSavedTrace(t *testing.T) {
	path := filepath.Join(t.TempDir(), "seq.csv")
	gen := parseSimJSON(t, simOK(t, "", append([]string{"--gen", "seq", "--json", "--save-trace", path}, simSmall...)...))
	if len(gen.Results) != 24 || gen.Lines == 0 || gen.Trace["requests"] != 2000.0 {
		t.Fatalf("report: %+v", gen)
	}
	r0 := gen.Results[0]
	for _, k := range []string{"mode", "promotion", "seq_cutoff", "cleaning", "read_hit_ratio", "hit_ratio", "pt_ratio", "line_hit_ratio", "requests", "blocks_4k", "usage_4k"} {
		if _, ok := r0[k]; !ok {
			t.Errorf("result lacks %q: %v", k, r0)
		}
	}
	if blocks := r0["blocks_4k"].(map[string]any); blocks["core_volume_rd"] == nil {
		t.Errorf("blocks_4k: %v", blocks)
	}
	if _, ok := gen.OPT["hit_ratio"]; !ok {
		t.Errorf("opt: %v", gen.OPT)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(data), "time,op,offset,length\n0,") {
		t.Fatalf("saved trace starts %q", data[:40])
	}
	fromFile := parseSimJSON(t, simOK(t, "", "--trace", path, "--cache-mib", "2", "--json"))
	fromStdin := parseSimJSON(t, simOK(t, string(data), "--trace", "-", "--cache-mib", "2", "--json"))
	if fromFile.Source != "trace "+path || fromStdin.Source != "trace -" {
		t.Errorf("sources %q, %q", fromFile.Source, fromStdin.Source)
	}
	for _, v := range []simJSONOut{fromFile, fromStdin} {
		if !reflect.DeepEqual(v.Results, gen.Results) || !reflect.DeepEqual(v.OPT, gen.OPT) || !reflect.DeepEqual(v.Trace, gen.Trace) {
			t.Errorf("replaying the saved trace (%s) gave another report", v.Source)
		}
	}
}

func TestSimErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.csv")
	if err := os.WriteFile(bad, []byte("time,op,offset,length\n0,R,0,4096\n1,R,100,4096\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty.csv")
	if err := os.WriteFile(empty, []byte("time,op,offset,length\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"--trace", bad, "--gen", "zipf"}, []string{"--trace and --gen exclude each other"}},
		{[]string{"--trace", bad, "--seed", "2"}, []string{"--seed applies to a generated trace"}},
		{[]string{"--trace", bad, "--save-trace", filepath.Join(dir, "x.csv")}, []string{"--save-trace applies to a generated trace"}},
		{[]string{"--trace", bad}, []string{"trace " + bad + ": line 3: offset 100: not a multiple of 512"}},
		{[]string{"--trace", empty}, []string{"no request to replay"}},
		{[]string{"--trace", filepath.Join(dir, "missing.csv")}, []string{"missing.csv", "no such file"}},
		{[]string{"--gen", "lru"}, []string{`--gen "lru": want zipf, scan, seq`}},
		{[]string{"--gen", "zipf", "--requests", "0"}, []string{"generator zipf: requests 0"}},
		{[]string{"--gen", "zipf", "--ws-mib", "0"}, []string{"--ws-mib 0"}},
		{[]string{"--gen", "zipf", "--skew", "-1"}, []string{"skew -1"}},
		{[]string{"--requests", "10", "--line-kib", "3"}, []string{"--line-kib 3: want 4, 8, 16, 32 or 64"}},
		{[]string{"--requests", "10", "--cache-mib", "0"}, []string{"--cache-mib 0"}},
		{[]string{"--requests", "10", "--save-trace", filepath.Join(dir, "no", "such", "dir.csv")}, []string{"--save-trace"}},
		{[]string{"extra"}, []string{"unknown command"}},
	} {
		args := append([]string{"sim"}, tc.args...)
		checkFails(t, args, runCLI(t, "", args...), tc.want...)
	}
}

// TestSimDefaultGen: without --trace or --gen, the zipf generator runs.
func TestSimDefaultGen(t *testing.T) {
	out := simOK(t, "", simSmall...)
	if !strings.HasPrefix(out, "trace: generated zipf (seed 1, 2000 requests") {
		t.Fatalf("output starts %q", out[:60])
	}
}
