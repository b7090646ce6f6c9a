package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/google/uuid"
	"golang.org/x/sys/unix"

	"blockcache/internal/bdev"
	"blockcache/internal/bdev/malloc"
	"blockcache/internal/cpumask"
	"blockcache/internal/perf"
)

// perfConfig writes an SPDK JSON config with the bdev entries given and
// returns its path.
func perfConfig(t *testing.T, entries ...string) string {
	t.Helper()
	doc := `{"subsystems":[{"subsystem":"bdev","config":[` + strings.Join(entries, ",") + `]},` +
		`{"subsystem":"nbd","config":[{"method":"nbd_start_disk","params":{"bdev_name":"Malloc2"}}]}]}`
	path := filepath.Join(t.TempDir(), "perf.json")
	if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func mallocEntry(name string, blocks int) string {
	return fmt.Sprintf(`{"method":"bdev_malloc_create","params":{"name":%q,"num_blocks":%d,"block_size":512}}`, name, blocks)
}

// ocfConfig is a write-back volume Cache1 on Malloc0 and Malloc1 and a
// free RAM disk Malloc2.
func ocfConfig(t *testing.T) string {
	return perfConfig(t, mallocEntry("Malloc0", 65536), mallocEntry("Malloc1", 32768),
		`{"method":"bdev_ocf_create","params":{"name":"Cache1","mode":"wb","cache_bdev_name":"Malloc0","core_bdev_name":"Malloc1"}}`,
		mallocEntry("Malloc2", 8192))
}

// perfRow matches a job's row of bdevperf's table and captures the job
// name, runtime, IOPS, MiB/s, Fail/s, TO/s, average, min and max.
var perfRow = regexp.MustCompile(`(?m)^\t (\S+)\s+: +([\d.]+) +([\d.]+) +([\d.]+) +([\d.]+) +([\d.]+) +([\d.]+) +([\d.]+) +([\d.]+)$`)

// TestPerfDrivesFreeBdevs: without -T perf drives the bdevs nothing else
// holds (the cache volume and the spare RAM disk, not the volume's cache
// and core), one job each, and prints bdevperf's table.
func TestPerfDrivesFreeBdevs(t *testing.T) {
	cfg := ocfConfig(t)
	r := runCLI(t, "", "perf", "-c", cfg, "-q", "4", "-o", "4k", "-w", "randread", "-t", "0.1")
	if r.code != 0 {
		t.Fatalf("exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	if !strings.HasPrefix(r.stdout, "Running I/O for 0.1 seconds...\n") {
		t.Errorf("stdout does not start with bdevperf's line:\n%s", r.stdout)
	}
	for _, want := range []string{
		" Device Information          : runtime(s)       IOPS      MiB/s     Fail/s     TO/s    Average        min        max\n",
		" Job: Cache1 (Core Mask 0x",
		", workload: randread, depth: 4, IO size: 4096)\n",
		" Job: Malloc2 (Core Mask 0x",
		"\n Total                       :            ",
		"\n\n OCF Cache1 over the run: read hits ",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("stdout lacks %q:\n%s", want, r.stdout)
		}
	}
	rows := perfRow.FindAllStringSubmatch(r.stdout, -1)
	if len(rows) != 2 || rows[0][1] != "Cache1" || rows[1][1] != "Malloc2" {
		t.Fatalf("job rows %q, want Cache1 and Malloc2", rows)
	}
	for _, row := range rows {
		iops, _ := strconv.ParseFloat(row[3], 64)
		runtime, _ := strconv.ParseFloat(row[2], 64)
		if iops <= 0 || runtime < 0.1 || row[5] != "0.00" {
			t.Errorf("row %q: IOPS %v runtime %v Fail/s %s", row[0], iops, runtime, row[5])
		}
	}
	if !strings.Contains(r.stderr, "subsystem nbd skipped (1 entries)") {
		t.Errorf("stderr does not say the nbd entries were skipped: %q", r.stderr)
	}
}

// TestPerfEveryCoreVerifyJSON: -C gives every CPU a job on its own slice
// of the bdev; verify passes on a write-back volume; --json is bdevperf's
// perform_tests result.
func TestPerfEveryCoreVerifyJSON(t *testing.T) {
	cfg := ocfConfig(t)
	r := runCLI(t, "", "perf", "-c", cfg, "-q", "2", "-o", "8k", "-w", "verify", "-t", "0.1", "-C", "-T", "Cache1", "--json")
	if r.code != 0 {
		t.Fatalf("exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	var rep struct {
		Results []struct {
			Job         string             `json:"job"`
			CoreMask    string             `json:"core_mask"`
			Workload    string             `json:"workload"`
			Status      string             `json:"status"`
			QueueDepth  int                `json:"queue_depth"`
			IOSize      int                `json:"io_size"`
			IOPS        float64            `json:"iops"`
			IOFailed    int                `json:"io_failed"`
			P99         float64            `json:"p99_latency_us"`
			Extra       map[string]float64 `json:"extra"`
			VerifyRange struct {
				Start, Length uint64
			} `json:"verify_range"`
		} `json:"results"`
		CoreCount int `json:"core_count"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("%v in %s", err, r.stdout)
	}
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		t.Fatal(err)
	}
	if len(rep.Results) != set.Count() || rep.CoreCount != set.Count() {
		t.Fatalf("%d jobs on %d cores, want one per CPU (%d)", len(rep.Results), rep.CoreCount, set.Count())
	}
	slice := uint64(32768*512/8192) / uint64(set.Count()) // 8 KiB IOs per CPU's slice of the 16 MiB volume
	for i, j := range rep.Results {
		if j.Job != "Cache1" || j.Workload != "verify" || j.Status != "finished" || j.IOFailed != 0 || j.IOPS <= 0 || j.P99 <= 0 || j.IOSize != 8192 {
			t.Errorf("job %d: %+v", i, j)
		}
		// Every verify IO writes then reads the volume; the volume's
		// counts are the run's, shared by the jobs on it.
		if e := j.Extra; e["ocf_writes"] < 1 || e["ocf_reads"] != e["ocf_writes"] || e["ocf_read_hit_pct"] < 99 {
			t.Errorf("job %d: cache volume figures %v; want as many reads as writes, the reads hits", i, e)
		}
		if j.VerifyRange.Start != uint64(i)*slice || j.VerifyRange.Length != slice {
			t.Errorf("job %d verifies %d+%d, want %d+%d", i, j.VerifyRange.Start, j.VerifyRange.Length, uint64(i)*slice, slice)
		}
	}
}

// TestPerfVerifyCatchesCorruption: an SPDK error bdev that corrupts reads
// makes verify fail: the job row shows failures, stderr names the
// miscompare and the exit status is 1, even with -f.
func TestPerfVerifyCatchesCorruption(t *testing.T) {
	cfg := perfConfig(t, mallocEntry("Malloc0", 8192), mallocEntry("Malloc2", 64),
		`{"method":"bdev_error_create","params":{"base_name":"Malloc0"}}`,
		`{"method":"bdev_error_inject_error","params":{"name":"EE_Malloc0","io_type":"read","error_type":"corrupt_data","num":3,"corrupt_offset":100,"corrupt_value":255}}`)
	for _, extra := range [][]string{nil, {"-f"}} {
		args := append([]string{"perf", "-c", cfg, "-q", "1", "-o", "4096", "-w", "verify", "-t", "0.1", "-T", "EE_Malloc0"}, extra...)
		r := runCLI(t, "", args...)
		if r.code != 1 {
			t.Fatalf("%v: exit %d, want 1\nstdout: %s\nstderr: %s", extra, r.code, r.stdout, r.stderr)
		}
		if !strings.Contains(r.stderr, "data read back differs from data written") || !strings.Contains(r.stderr, "byte 100") {
			t.Errorf("%v: stderr does not name the miscompare: %s", extra, r.stderr)
		}
		rows := perfRow.FindAllStringSubmatch(r.stdout, -1)
		if len(rows) != 1 || rows[0][5] == "0.00" {
			t.Errorf("%v: rows %q; want one with failures", extra, rows)
		}
		ended := strings.Contains(r.stdout, "Job: EE_Malloc0 ended in about")
		if ended == (len(extra) > 0) {
			t.Errorf("%v: 'ended with error' line present %v:\n%s", extra, ended, r.stdout)
		}
	}
}

// TestPerfContinueOnFailure: with -f failed IOs are counted and the run
// exits 0; without it the first stops the job and the run exits 1.
func TestPerfContinueOnFailure(t *testing.T) {
	cfg := perfConfig(t, mallocEntry("Malloc0", 8192), mallocEntry("Malloc2", 64),
		`{"method":"bdev_error_create","params":{"base_name":"Malloc0"}}`,
		`{"method":"bdev_error_inject_error","params":{"name":"EE_Malloc0","io_type":"write","error_type":"failure","num":5}}`)
	r := runCLI(t, "", "perf", "-c", cfg, "-q", "1", "-o", "4k", "-w", "randrw", "-M", "50", "-t", "0.1", "-T", "EE_Malloc0", "-f", "--json")
	if r.code != 0 || !strings.Contains(r.stdout, `"io_failed": 5`) || !strings.Contains(r.stdout, `"percentage": 50`) {
		t.Fatalf("-f: exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	r = runCLI(t, "", "perf", "-c", cfg, "-q", "1", "-o", "4k", "-w", "randwrite", "-t", "5", "-T", "EE_Malloc0")
	if r.code != 1 || !strings.Contains(r.stderr, "EE_Malloc0") || !strings.Contains(r.stdout, "ended in about 0.") {
		t.Fatalf("no -f: exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
}

// TestPerfPinnedToAllowedCPUs: -m with the CPUs the process already has
// runs without re-executing and counts the jobs on those CPUs.
func TestPerfPinnedToAllowedCPUs(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		t.Fatal(err)
	}
	first := -1
	for c := 0; first < 0; c++ {
		if set.IsSet(c) {
			first = c
		}
	}
	cfg := perfConfig(t, mallocEntry("Malloc2", 64))
	r := runCLI(t, "", "perf", "-c", cfg, "-q", "1", "-o", "512", "-w", "write", "-t", "0.05", "-m", "["+cpumask.String(set)+"]")
	if want := fmt.Sprintf("Job: Malloc2 (Core Mask 0x%x,", 1<<first); r.code != 0 || !strings.Contains(r.stdout, want) {
		t.Fatalf("exit %d, want 0 and %q\nstdout: %s\nstderr: %s", r.code, want, r.stdout, r.stderr)
	}
}

func TestPerfWarnsAboutIgnoredMix(t *testing.T) {
	cfg := perfConfig(t, mallocEntry("Malloc2", 64))
	r := runCLI(t, "", "perf", "-c", cfg, "-q", "1", "-o", "512", "-w", "read", "-M", "30", "-t", "0.05", "-l", "--warmup", "0.02")
	if r.code != 0 || !strings.Contains(r.stderr, "-M is ignored with -w read") || !strings.Contains(r.stdout, " 99.00000% : ") || strings.Contains(r.stdout, " OCF ") {
		t.Fatalf("exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
}

// TestPerfRefuses: bad flags and bad configs fail before any IO with a
// message naming what is wrong.
func TestPerfRefuses(t *testing.T) {
	good := perfConfig(t, mallocEntry("Malloc2", 64), `{"method":"bdev_null_create","params":{"name":"Null0","num_blocks":64,"block_size":512}}`)
	badEntry := perfConfig(t, mallocEntry("Malloc2", 64), `{"method":"bdev_malloc_create","params":{"name":"Bad","num_blocks":64,"block_size":100}}`)
	unknown := perfConfig(t, `{"method":"bdev_frobnicate","params":{}}`)
	waiting := perfConfig(t, mallocEntry("Malloc0", 65536),
		`{"method":"bdev_ocf_create","params":{"name":"Cache9","mode":"wt","cache_bdev_name":"Malloc0","core_bdev_name":"Nope"}}`)
	base := func(extra ...string) []string {
		return append([]string{"perf", "-c", good, "-q", "1", "-o", "4k", "-w", "randread", "-t", "0.05"}, extra...)
	}
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"perf", "-q", "1", "-o", "4k", "-w", "read", "-t", "1"}, "-c/--config is required"},
		{[]string{"perf", "-c", good, "-o", "4k", "-w", "read", "-t", "1"}, "-q/--queue-depth is required"},
		{[]string{"perf", "-c", good, "-q", "1", "-w", "read", "-t", "1"}, "-o/--io-size is required"},
		{[]string{"perf", "-c", good, "-q", "1", "-o", "4k", "-t", "1"}, "-w/--workload is required"},
		{[]string{"perf", "-c", good, "-q", "1", "-o", "4k", "-w", "read"}, "-t/--time is required"},
		{base("-q", "-3"), "-q -3: want 1..4096"},
		{base("-o", "4x"), `-o: IO size "4x": unknown unit "x"`},
		{base("-w", "reset"), `-w: workload "reset": want one of`},
		{base("-t", "0"), `-t "0": want a number of seconds`},
		{base("-t", "NaN"), `-t "NaN"`},
		{base("--warmup", "-1"), `--warmup "-1"`},
		{base("--io-poll", "-1ms"), "--io-poll -1ms: must not be negative"},
		{base("-w", "randrw"), "-M must be given, 0..100, with -w randrw"},
		{base("-w", "rw", "-M", "101"), "-M must be given, 0..100, with -w rw"},
		{base("-m", "0xZZ"), "-m/--cpumask: cpu mask"},
		{base("-T", "Malloc9"), "-T Malloc9"},
		{base("-o", "1000"), "IO size 1000 is not a multiple of Malloc2's block size 512"},
		{base("-o", "64k"), "holds no 65536-byte IO"},
		{base("-T", "Null0", "-w", "unmap"), "Null0 cannot unmap"},
		{[]string{"perf", "-c", filepath.Join(t.TempDir(), "none.json"), "-q", "1", "-o", "4k", "-w", "read", "-t", "1"}, "read config"},
		{[]string{"perf", "-c", badEntry, "-q", "1", "-o", "4k", "-w", "read", "-t", "1"}, "subsystem bdev entry 1 (bdev_malloc_create)"},
		{[]string{"perf", "-c", unknown, "-q", "1", "-o", "4k", "-w", "read", "-t", "1"}, "entry 0 (bdev_frobnicate): Method not found"},
		{[]string{"perf", "-c", waiting, "-q", "1", "-o", "4k", "-w", "read", "-t", "1"}, `OCF vbdev "Cache9" is waiting for bdev "Nope"`},
	}
	for _, c := range cases {
		r := runCLI(t, "", c.args...)
		checkFails(t, c.args, r, c.want)
	}
}

// TestPerfFileVolumeAndExamine: a cache volume on files runs, and its
// cache file keeps the volume: a later config that opens the cache file
// alone gets the volume back from the metadata, waiting for its core; perf
// says so and measures the rest.
func TestPerfFileVolumeAndExamine(t *testing.T) {
	dir := t.TempDir()
	cache, core := filepath.Join(dir, "cache.img"), filepath.Join(dir, "core.img")
	for path, size := range map[string]int64{cache: 64 << 20, core: 16 << 20} {
		if err := os.WriteFile(path, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(path, size); err != nil {
			t.Fatal(err)
		}
	}
	file := func(name, path string) string {
		return fmt.Sprintf(`{"method":"bdev_aio_create","params":{"name":%q,"filename":%q,"block_size":512}}`, name, path)
	}
	full := perfConfig(t, file("File0", cache), file("File1", core), mallocEntry("Malloc2", 64),
		`{"method":"bdev_ocf_create","params":{"name":"Cache1","mode":"wt","cache_bdev_name":"File0","core_bdev_name":"File1"}}`)
	r := runCLI(t, "", "perf", "-c", full, "-q", "4", "-o", "4k", "-w", "randrw", "-M", "50", "-t", "0.1", "-T", "Cache1")
	if rows := perfRow.FindAllStringSubmatch(r.stdout, -1); r.code != 0 || len(rows) != 1 || rows[0][1] != "Cache1" {
		t.Fatalf("exit %d rows %q\nstdout: %s\nstderr: %s", r.code, rows, r.stdout, r.stderr)
	}
	half := perfConfig(t, file("File0", cache), mallocEntry("Malloc2", 64))
	r = runCLI(t, "", "perf", "-c", half, "-q", "1", "-o", "4k", "-w", "read", "-t", "0.05")
	rows := perfRow.FindAllStringSubmatch(r.stdout, -1)
	if r.code != 0 || len(rows) != 1 || rows[0][1] != "Malloc2" {
		t.Fatalf("exit %d rows %q\nstdout: %s\nstderr: %s", r.code, rows, r.stdout, r.stderr)
	}
	if want := `OCF vbdev "Cache1", found on its cache device, is waiting for bdev "File1"`; !strings.Contains(r.stderr, want) {
		t.Errorf("stderr lacks %q: %s", want, r.stderr)
	}
}

// TestPerfJobList: one job per bdev on the CPUs in turn; with -C one per
// CPU per bdev on equal slices, refused when a slice holds no IO.
func TestPerfJobList(t *testing.T) {
	small, err := malloc.New("Small", uuid.New(), 512, 9)
	if err != nil {
		t.Fatal(err)
	}
	big, err := malloc.New("Big", uuid.New(), 4096, 10)
	if err != nil {
		t.Fatal(err)
	}
	defer small.Close()
	defer big.Close()
	p := perfJobs{workload: perf.RandRead, ioSize: 512}
	jobs, err := perfJobList([]bdev.Device{small, big, small}, []int{3, 5}, p, &perfOpts{queueDepth: 2})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, j := range jobs {
		got = append(got, fmt.Sprintf("%s@%d:%d+%d", j.Name, j.Core, j.Offset, j.Length))
	}
	if want := "Small@3:0+0 Big@5:0+0 Small@3:0+0"; strings.Join(got, " ") != want {
		t.Errorf("jobs %s, want %s", strings.Join(got, " "), want)
	}
	jobs, err = perfJobList([]bdev.Device{small, big}, []int{3, 5}, p, &perfOpts{queueDepth: 2, everyCore: true})
	if err != nil {
		t.Fatal(err)
	}
	got = got[:0]
	for _, j := range jobs {
		got = append(got, fmt.Sprintf("%s@%d:%d+%d", j.Name, j.Core, j.Offset, j.Length))
	}
	if want := "Small@3:0+2048 Small@5:2048+2048 Big@3:0+20480 Big@5:20480+20480"; strings.Join(got, " ") != want {
		t.Errorf("-C jobs %s, want %s", strings.Join(got, " "), want)
	}
	p.ioSize = 4096
	if _, err := perfJobList([]bdev.Device{small}, []int{0, 1, 2}, p, &perfOpts{queueDepth: 1, everyCore: true}); err == nil ||
		!strings.Contains(err.Error(), "-C: Small (4608 bytes) split among 3 CPUs leaves less than one 4096-byte IO per CPU") {
		t.Errorf("-C on a bdev too small to split: %v", err)
	}
}
