package perf

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

// fixedResults are two jobs with known counts and latencies.
func fixedResults() []*Result {
	a := &Result{Job: "Malloc0", Core: 0, Workload: RandRead, QueueDepth: 32, IOSize: 4096,
		Runtime: 2 * time.Second, Completed: 2000, Latency: new(Histogram)}
	for range 1000 {
		a.Latency.Record(time.Microsecond)
		a.Latency.Record(3 * time.Microsecond)
	}
	b := &Result{Job: "Cache1", Core: 2, Workload: RandRW, ReadPercent: 70, QueueDepth: 1, IOSize: 512,
		Runtime: time.Second, Completed: 99, Failed: 1, Latency: new(Histogram), Err: errors.New("Cache1 write at offset 0: EIO"),
		Extra: map[string]float64{"ocf_read_hit_pct": 99.5}}
	for range 100 {
		b.Latency.Record(10 * time.Microsecond)
	}
	return []*Result{a, b}
}

func TestWriteText(t *testing.T) {
	var out bytes.Buffer
	if err := WriteText(&out, fixedResults(), false); err != nil {
		t.Fatal(err)
	}
	want := "\n" + strings.Repeat(" ", 96) + "Latency(us)\n" +
		" Device Information          : runtime(s)       IOPS      MiB/s     Fail/s     TO/s    Average        min        max\n" +
		" Job: Malloc0 (Core Mask 0x1, workload: randread, depth: 32, IO size: 4096)\n" +
		"\t Malloc0             :       2.00    1000.00       3.91       0.00     0.00       2.00       1.00       3.00\n" +
		" Job: Cache1 (Core Mask 0x4, workload: randrw, percentage: 70, depth: 1, IO size: 512)\n" +
		" Job: Cache1 ended in about 1.00 seconds with error\n" +
		"\t Cache1              :       1.00      99.00       0.05       1.00     0.00      10.00      10.00      10.00\n" +
		" " + strings.Repeat("=", 115) + "\n" +
		" Total                       :               1099.00       3.95       1.00     0.00       2.38       1.00      10.00\n"
	if out.String() != want {
		t.Fatalf("got:\n%s\nwant:\n%s", out.String(), want)
	}
}

func TestWriteTextSummaryAndVerify(t *testing.T) {
	rs := fixedResults()
	rs[0].Workload, rs[0].VerifyStart, rs[0].VerifyLength = Verify, 0, 0x8000
	var out bytes.Buffer
	if err := WriteText(&out, rs, true); err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{
		"\t Verification LBA range: start 0x0 length 0x8000\n",
		"\n Latency summary\n =============================================\n Job: Malloc0 (Core Mask 0x1)\n  1.00000% :     1.007us\n",
		" 50.00000% :     1.007us\n", // the bucket of 1000 ns ends at 1007
		" 75.00000% :     3.000us\n",
		" 99.99999% :     3.000us\n",
		" Job: Cache1 (Core Mask 0x4)\n  1.00000% :    10.000us\n",
	} {
		if !strings.Contains(out.String(), line) {
			t.Errorf("output lacks %q:\n%s", line, out.String())
		}
	}
}

func TestWriteJSON(t *testing.T) {
	var out bytes.Buffer
	if err := WriteJSON(&out, fixedResults()); err != nil {
		t.Fatal(err)
	}
	var got struct {
		Results []map[string]any `json:"results"`
		Cores   int              `json:"core_count"`
	}
	if err := json.Unmarshal(out.Bytes(), &got); err != nil {
		t.Fatalf("%v in %s", err, out.String())
	}
	if got.Cores != 2 || len(got.Results) != 2 {
		t.Fatalf("core_count %d, %d results", got.Cores, len(got.Results))
	}
	a, b := got.Results[0], got.Results[1]
	wantA := map[string]any{"job": "Malloc0", "core_mask": "0x1", "workload": "randread", "status": "finished",
		"queue_depth": 32.0, "io_size": 4096.0, "runtime": 2.0, "iops": 1000.0, "io_failed": 0.0, "io_timeout": 0.0,
		"avg_latency_us": 2.0, "min_latency_us": 1.0, "max_latency_us": 3.0, "p50_latency_us": 1.007, "p99_latency_us": 3.0,
		"io_completed": 2000.0}
	for k, v := range wantA {
		if a[k] != v {
			t.Errorf("job 0 %s = %v, want %v", k, a[k], v)
		}
	}
	if _, ok := a["percentage"]; ok {
		t.Errorf("randread has a percentage")
	}
	if _, ok := a["extra"]; ok {
		t.Errorf("job 0 has extra figures it was not given")
	}
	if extra, _ := b["extra"].(map[string]any); extra["ocf_read_hit_pct"] != 99.5 {
		t.Errorf("job 1 extra %v, want ocf_read_hit_pct 99.5", b["extra"])
	}
	if b["percentage"] != 70.0 || b["status"] != "failed" || b["error"] != "Cache1 write at offset 0: EIO" || b["core_mask"] != "0x4" {
		t.Errorf("job 1: %v", b)
	}
	// bdevperf's members come first, in its order.
	keys := []string{`"job"`, `"core_mask"`, `"workload"`, `"percentage"`, `"status"`, `"queue_depth"`, `"io_size"`, `"runtime"`, `"iops"`, `"mibps"`, `"io_failed"`, `"io_timeout"`, `"avg_latency_us"`, `"min_latency_us"`, `"max_latency_us"`}
	second := out.String()[strings.Index(out.String(), `"Cache1"`)-len(`"job": `)-1:]
	last := -1
	for _, k := range keys {
		i := strings.Index(second, k)
		if i <= last {
			t.Fatalf("member %s out of bdevperf's order in %s", k, second)
		}
		last = i
	}
}

func TestCoreMask(t *testing.T) {
	for core, want := range map[int]string{0: "0x1", 1: "0x2", 4: "0x10", 63: "0x8000000000000000", 64: "0x10000000000000000"} {
		if got := CoreMask(core); got != want {
			t.Errorf("CoreMask(%d) = %s, want %s", core, got, want)
		}
	}
}
