package perf

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"blockcache/internal/bdev"
	"blockcache/internal/bdev/errinj"
	"blockcache/internal/bdev/malloc"
	"blockcache/internal/bdev/null"
)

func newMalloc(t testing.TB, name string, blocks uint64) *malloc.Device {
	t.Helper()
	d, err := malloc.New(name, uuid.New(), 512, blocks)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// recorder is a device that remembers every IO it served.
type recorder struct {
	bdev.Device
	mu  sync.Mutex
	ops []recordedOp
}

type recordedOp struct {
	kind string
	off  int64
	n    int
}

func (r *recorder) add(kind string, off int64, n int) {
	r.mu.Lock()
	r.ops = append(r.ops, recordedOp{kind, off, n})
	r.mu.Unlock()
}

func (r *recorder) ReadAt(p []byte, off int64) error {
	r.add("read", off, len(p))
	return r.Device.ReadAt(p, off)
}

func (r *recorder) WriteAt(p []byte, off int64, fua bool) error {
	r.add("write", off, len(p))
	return r.Device.WriteAt(p, off, fua)
}

func runOne(t *testing.T, j Job, d time.Duration) *Result {
	t.Helper()
	res, err := Run(context.Background(), []Job{j}, d)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 1 {
		t.Fatalf("%d results, want 1", len(res))
	}
	return res[0]
}

func TestRunRandRead(t *testing.T) {
	dev := newMalloc(t, "Malloc0", 8192)
	r := runOne(t, Job{Name: "Malloc0", Dev: dev, Workload: RandRead, QueueDepth: 4, IOSize: 4096}, 50*time.Millisecond)
	if r.Completed == 0 || r.Failed != 0 || r.Err != nil {
		t.Fatalf("completed %d failed %d err %v", r.Completed, r.Failed, r.Err)
	}
	if r.Latency.Count() != r.Completed {
		t.Fatalf("latency count %d, completed %d", r.Latency.Count(), r.Completed)
	}
	if r.Runtime < 50*time.Millisecond || r.Runtime > 2*time.Second {
		t.Fatalf("runtime %v for a 50ms run", r.Runtime)
	}
	if r.Status() != "finished" || r.IOPS() <= 0 || r.MiBps() != r.IOPS()*4096/(1<<20) {
		t.Fatalf("status %s IOPS %v MiB/s %v", r.Status(), r.IOPS(), r.MiBps())
	}
	if r.Latency.Min() <= 0 || r.Latency.Min() > r.Latency.Mean() || r.Latency.Mean() > r.Latency.Max() {
		t.Fatalf("latency min %v mean %v max %v", r.Latency.Min(), r.Latency.Mean(), r.Latency.Max())
	}
}

// TestSequentialWalk: one slot walks its range in order from its start,
// wrapping; with several slots the IOs together still cover each offset
// once per lap.
func TestSequentialWalk(t *testing.T) {
	rec := &recorder{Device: newMalloc(t, "Malloc0", 64)} // 32 KiB: 8 IOs of 4 KiB
	r := runOne(t, Job{Name: "m", Dev: rec, Workload: Read, QueueDepth: 1, IOSize: 4096, Offset: 8192, Length: 16384}, 20*time.Millisecond)
	if r.Completed < 8 {
		t.Fatalf("only %d IOs", r.Completed)
	}
	for i, op := range rec.ops {
		want := 8192 + int64(i%4)*4096
		if op.kind != "read" || op.off != want || op.n != 4096 {
			t.Fatalf("IO %d: %+v, want a 4096-byte read at %d", i, op, want)
		}
	}

	rec = &recorder{Device: newMalloc(t, "Malloc1", 64)}
	r = runOne(t, Job{Name: "m", Dev: rec, Workload: Write, QueueDepth: 3, IOSize: 4096}, 20*time.Millisecond)
	if r.Completed != uint64(len(rec.ops)) {
		t.Fatalf("%d IOs completed, the device saw %d", r.Completed, len(rec.ops))
	}
	seen := map[int64]int{}
	for _, op := range rec.ops {
		if op.kind != "write" || op.off%4096 != 0 || op.off >= 32768 {
			t.Fatalf("unexpected IO %+v", op)
		}
		seen[op.off]++
	}
	if len(seen) != 8 {
		t.Fatalf("sequential writes at QD3 touched %d of 8 offsets", len(seen))
	}
}

func TestRandomStaysInRangeAndMixes(t *testing.T) {
	rec := &recorder{Device: newMalloc(t, "Malloc0", 4096)}
	r := runOne(t, Job{Name: "m", Dev: rec, Workload: RandRW, ReadPercent: 70, QueueDepth: 2, IOSize: 1024, Offset: 1 << 20, Length: 512 << 10}, 30*time.Millisecond)
	if r.Completed < 1000 {
		t.Fatalf("only %d IOs", r.Completed)
	}
	reads := 0
	offsets := map[int64]bool{}
	for _, op := range rec.ops {
		if op.off < 1<<20 || op.off+int64(op.n) > 1<<20+512<<10 || op.off%1024 != 0 {
			t.Fatalf("IO %+v outside the range [1 MiB, 1.5 MiB) or misaligned", op)
		}
		if op.kind == "read" {
			reads++
		}
		offsets[op.off] = true
	}
	if pct := 100 * reads / len(rec.ops); pct < 62 || pct > 78 {
		t.Fatalf("%d%% reads with -M 70", pct)
	}
	if len(offsets) < 256 {
		t.Fatalf("random IOs hit only %d of 512 offsets", len(offsets))
	}
}

func TestVerifyPasses(t *testing.T) {
	rec := &recorder{Device: newMalloc(t, "Malloc0", 256)}
	r := runOne(t, Job{Name: "m", Dev: rec, Workload: Verify, QueueDepth: 8, IOSize: 4096}, 30*time.Millisecond)
	if r.Completed == 0 || r.Failed != 0 || r.Miscompares != 0 || r.Err != nil {
		t.Fatalf("completed %d failed %d miscompares %d err %v", r.Completed, r.Failed, r.Miscompares, r.Err)
	}
	if r.VerifyStart != 0 || r.VerifyLength != 32 || r.QueueDepth != 8 {
		t.Fatalf("verify range %d+%d depth %d", r.VerifyStart, r.VerifyLength, r.QueueDepth)
	}
	// Each IO is a write then a read of the same place.
	writes := 0
	for _, op := range rec.ops {
		if op.kind == "write" {
			writes++
		}
	}
	if reads := len(rec.ops) - writes; writes != reads || uint64(writes) < r.Completed {
		t.Fatalf("%d writes, %d reads for %d verified IOs", writes, reads, r.Completed)
	}
}

// TestVerifyLimitsDepth: verify never runs more IOs at once than the range
// holds, so that no two overlap (bdevperf does the same).
func TestVerifyLimitsDepth(t *testing.T) {
	r := runOne(t, Job{Name: "m", Dev: newMalloc(t, "Malloc0", 32), Workload: Verify, QueueDepth: 64, IOSize: 4096}, 10*time.Millisecond)
	if r.QueueDepth != 4 || r.Failed != 0 {
		t.Fatalf("depth %d failed %d; want 4 and 0", r.QueueDepth, r.Failed)
	}
}

// TestVerifyDetectsCorruption: a device that corrupts one byte of one read
// makes verify fail that IO as a miscompare and stop the job; with
// ContinueOnFailure the job runs on and counts every corrupted read.
func TestVerifyDetectsCorruption(t *testing.T) {
	corrupt := &errinj.Corruption{Offset: 1000, Mask: 0x40}
	dev := errinj.Wrap(newMalloc(t, "Malloc0", 1024), corrupt.If(errinj.And(errinj.Reads(), errinj.OnIndex(5))))
	r := runOne(t, Job{Name: "Err0", Dev: dev, Workload: Verify, QueueDepth: 1, IOSize: 4096}, time.Second)
	if r.Miscompares != 1 || r.Failed != 1 || r.Completed != 5 {
		t.Fatalf("miscompares %d failed %d completed %d; want 1, 1, 5", r.Miscompares, r.Failed, r.Completed)
	}
	if !errors.Is(r.Err, ErrMiscompare) || !strings.Contains(r.Err.Error(), "byte 1000 (device offset 21480)") {
		t.Fatalf("err %v; want a miscompare at byte 1000 of the sixth IO (offset 20480)", r.Err)
	}
	if r.Status() != "failed" || r.Runtime > 500*time.Millisecond {
		t.Fatalf("status %s runtime %v; want failed, stopped early", r.Status(), r.Runtime)
	}

	// How many reads a loaded machine completes in the window varies, so
	// the miscompares are checked against the corruptions injected: every
	// one is found, but for those of reads the job's end left unchecked.
	injected := &errinj.Counter{Injector: corrupt.If(errinj.And(errinj.Reads(), errinj.Randomly(0.1, 7)))}
	every := errinj.Wrap(newMalloc(t, "Malloc1", 1024), injected)
	const depth = 4
	r = runOne(t, Job{Name: "Err1", Dev: every, Workload: Verify, QueueDepth: depth, IOSize: 4096, ContinueOnFailure: true}, 50*time.Millisecond)
	n := uint64(injected.Load())
	if n < 2 || r.Miscompares > n || r.Miscompares+depth < n || r.Failed != r.Miscompares || r.Completed < 5*r.Failed {
		t.Fatalf("continue on failure: %d corruptions injected; miscompares %d failed %d completed %d", n, r.Miscompares, r.Failed, r.Completed)
	}
	if r.Status() != "finished" {
		t.Fatalf("status %s, want finished with -f", r.Status())
	}
}

// TestFailedIOStopsJob: a device error counts as a failure and ends the
// job; the result carries the error.
func TestFailedIOStopsJob(t *testing.T) {
	eio := errinj.Label("injected", errors.New("injected EIO"))
	dev := errinj.Wrap(newMalloc(t, "Malloc0", 1024), eio.If(errinj.And(errinj.Writes(), errinj.OnIndex(3))))
	r := runOne(t, Job{Name: "e", Dev: dev, Workload: RandWrite, QueueDepth: 1, IOSize: 512}, time.Second)
	if r.Failed != 1 || r.Completed != 3 || r.Err == nil || !strings.Contains(r.Err.Error(), "injected EIO") {
		t.Fatalf("failed %d completed %d err %v", r.Failed, r.Completed, r.Err)
	}
	if r.FailPerSec() <= 0 || r.Status() != "failed" {
		t.Fatalf("fail/s %v status %s", r.FailPerSec(), r.Status())
	}
}

func TestDatalessWorkloads(t *testing.T) {
	dev := newMalloc(t, "Malloc0", 64)
	fill := bytes.Repeat([]byte{0xaa}, 32768)
	if err := dev.WriteAt(fill, 0, false); err != nil {
		t.Fatal(err)
	}
	for _, w := range []Workload{Flush, Unmap, WriteZeroes} {
		r := runOne(t, Job{Name: "m", Dev: dev, Workload: w, QueueDepth: 2, IOSize: 4096}, 10*time.Millisecond)
		if r.Completed == 0 || r.Failed != 0 {
			t.Fatalf("%v: completed %d failed %d err %v", w, r.Completed, r.Failed, r.Err)
		}
	}
	got := make([]byte, 32768)
	if err := dev.ReadAt(got, 0); err != nil || !bytes.Equal(got, make([]byte, 32768)) {
		t.Fatalf("after unmap and write_zeroes the device is not zero (err %v)", err)
	}
}

// noZeroes hides its device's WriteZeroes and Discard.
type noZeroes struct{ d bdev.Device }

func (n noZeroes) Info() bdev.Info {
	in := n.d.Info()
	in.Abilities = bdev.Abilities{}
	return in
}
func (n noZeroes) ReadAt(p []byte, off int64) error            { return n.d.ReadAt(p, off) }
func (n noZeroes) WriteAt(p []byte, off int64, fua bool) error { return n.d.WriteAt(p, off, fua) }
func (n noZeroes) Flush() error                                { return n.d.Flush() }
func (n noZeroes) Close() error                                { return nil }

func TestWriteZeroesFallsBackToWrites(t *testing.T) {
	dev := newMalloc(t, "Malloc0", 64)
	if err := dev.WriteAt(bytes.Repeat([]byte{0x55}, 32768), 0, false); err != nil {
		t.Fatal(err)
	}
	r := runOne(t, Job{Name: "m", Dev: noZeroes{dev}, Workload: WriteZeroes, QueueDepth: 1, IOSize: 4096}, 10*time.Millisecond)
	if r.Completed < 8 || r.Failed != 0 {
		t.Fatalf("completed %d failed %d err %v", r.Completed, r.Failed, r.Err)
	}
	got := make([]byte, 32768)
	if err := dev.ReadAt(got, 0); err != nil || !bytes.Equal(got, make([]byte, 32768)) {
		t.Fatalf("write_zeroes by writes left data behind (err %v)", err)
	}
}

func TestRunRefusesBadJobs(t *testing.T) {
	m := newMalloc(t, "Malloc0", 64)
	nd, err := null.New("Null0", uuid.New(), 4096, 16)
	if err != nil {
		t.Fatal(err)
	}
	ok := Job{Name: "m", Dev: m, Workload: Read, QueueDepth: 1, IOSize: 4096}
	cases := []struct {
		name string
		edit func(*Job)
		want string
		is   error
	}{
		{"no device", func(j *Job) { j.Dev = nil }, "no device", ErrInvalidOption},
		{"depth 0", func(j *Job) { j.QueueDepth = 0 }, "queue depth 0", ErrInvalidOption},
		{"depth huge", func(j *Job) { j.QueueDepth = MaxQueueDepth + 1 }, "queue depth 4097", ErrInvalidOption},
		{"size 0", func(j *Job) { j.IOSize = 0 }, "IO size 0", ErrInvalidOption},
		{"unaligned size", func(j *Job) { j.IOSize = 1000 }, "not a multiple of Malloc0's block size 512", ErrInvalidOption},
		{"size beyond device", func(j *Job) { j.IOSize = 64 << 10 }, "holds no 65536-byte IO", ErrInvalidOption},
		{"mix", func(j *Job) { j.Workload, j.ReadPercent = RW, 101 }, "read percentage 101", ErrInvalidOption},
		{"range", func(j *Job) { j.Offset = 100 }, "block-aligned", ErrInvalidOption},
		{"range end", func(j *Job) { j.Offset, j.Length = 16384, 32768 }, "holds no", ErrInvalidOption},
		{"workload", func(j *Job) { j.Workload = 99 }, "workload(99)", ErrInvalidOption},
		{"unmap on null", func(j *Job) { j.Dev, j.Workload = nd, Unmap }, "Null0 cannot unmap", ErrNotSupported},
	}
	for _, c := range cases {
		j := ok
		c.edit(&j)
		_, err := Run(context.Background(), []Job{ok, j}, time.Millisecond)
		if !errors.Is(err, c.is) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v; want %v with %q", c.name, err, c.is, c.want)
		}
		if cerr := Check([]Job{ok, j}); cerr == nil || cerr.Error() != err.Error() {
			t.Errorf("%s: Check says %v, Run %v", c.name, cerr, err)
		}
	}
	if err := Check([]Job{ok}); err != nil {
		t.Errorf("Check of a valid job: %v", err)
	}
	if _, err := Run(context.Background(), []Job{ok}, 0); !errors.Is(err, ErrInvalidOption) {
		t.Errorf("zero run time: %v", err)
	}
	if _, err := Run(context.Background(), nil, time.Second); !errors.Is(err, ErrInvalidOption) {
		t.Errorf("no jobs: %v", err)
	}
}

// TestCancelTerminates: cancelling the context ends a long run at once,
// with every job marked terminated.
func TestCancelTerminates(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(20*time.Millisecond, cancel)
	jobs := []Job{
		{Name: "a", Dev: newMalloc(t, "Malloc0", 64), Workload: RandRead, QueueDepth: 2, IOSize: 512},
		{Name: "b", Dev: newMalloc(t, "Malloc1", 64), Workload: Write, QueueDepth: 1, IOSize: 512, Core: 1},
	}
	start := time.Now()
	res, err := Run(ctx, jobs, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Fatalf("cancelled run took %v", took)
	}
	for _, r := range res {
		if r.Status() != "terminated" || r.Completed == 0 {
			t.Fatalf("job %s: status %s completed %d", r.Job, r.Status(), r.Completed)
		}
	}
	if res[1].Core != 1 || res[1].Workload != Write {
		t.Fatalf("result 1: core %d workload %v", res[1].Core, res[1].Workload)
	}
}
