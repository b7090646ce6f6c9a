package uring

import (
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestRingBatchesSubmissions: on one CPU (GOMAXPROCS=1), 32 goroutines
// reading an O_DIRECT file through a ring of depth 32 share their
// io_uring_enter calls: far fewer calls than reads, where a call per read
// is what unbatched submission makes; but no call submits more than
// maxBatch, so the device gets the first entries of a round of
// completions while the rest are being gathered (gathering them all made
// the queue move in lockstep, 32 at a time). Every read returns its block.
func TestRingBatchesSubmissions(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	const (
		block   = 4096
		blocks  = 64
		workers = 32
		reads   = 100
	)
	fd := tempFile(t, t.TempDir(), "batch.img", 0, unix.O_DIRECT)
	data := alignedBuf(blocks * block)
	for i := range data {
		data[i] = byte(i / block)
	}
	if _, err := unix.Pwrite(fd, data, 0); err != nil {
		t.Fatal(err)
	}
	r := newTestRing(t, workers)
	before := r.enters.Load()
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			buf := alignedBuf(block)
			for i := range reads {
				blk := (w*reads + i) % blocks
				n, err := r.Pread(fd, buf, int64(blk)*block)
				if err != nil || n != block || buf[0] != byte(blk) || buf[block-1] != byte(blk) {
					t.Errorf("worker %d read %d of block %d: %d, %v, first byte %d", w, i, blk, n, err, buf[0])
					return
				}
			}
		})
	}
	wg.Wait()
	enters := r.enters.Load() - before
	t.Logf("%d io_uring_enter calls for %d reads", enters, workers*reads)
	if enters > workers*reads/4 {
		t.Fatalf("%d io_uring_enter calls for %d reads by %d goroutines on one CPU: submissions are not batched", enters, workers*reads, workers)
	}
	if enters*maxBatch < workers*reads {
		t.Fatalf("%d io_uring_enter calls for %d reads by %d goroutines on one CPU: more than %d entries a call", enters, workers*reads, workers, maxBatch)
	}
}

// TestRingWaitsWithoutBlockedThread: with reads of an empty pipe in
// flight and every submitter waiting, no thread of the process is inside
// io_uring_enter (/proc/self/task/*/syscall): completions are awaited in
// the netpoller. Then the reads complete.
func TestRingWaitsWithoutBlockedThread(t *testing.T) {
	const depth = 8
	r := newTestRing(t, depth)
	rd, wr := testPipe(t)
	results := pipeReaders(t, r, rd, depth)
	// The last reader may still be submitting: wait until it is done.
	for r.entering.Load() || loadAcquire(r.sqHead) != loadAcquire(r.sqTail) {
		time.Sleep(time.Millisecond)
	}
	// A thread seen inside io_uring_enter in every one of 20 looks over
	// about 100 ms is blocked there; one seen in some is only submitting
	// (an entry the kernel took is counted in sqHead before the call
	// returns). The kernel's io-wq workers (iou-wrk-*), left by earlier
	// tests' file IO, are threads of the process too, and show the
	// io_uring_enter they were forked from: they are not ours.
	enter := strconv.Itoa(unix.SYS_IO_URING_ENTER)
	const looks = 20
	seen := map[string]int{}
	last := map[string]string{}
	for range looks {
		tasks, err := filepath.Glob("/proc/self/task/*/syscall")
		if err != nil || len(tasks) == 0 {
			t.Fatalf("listing threads: %v (%d)", err, len(tasks))
		}
		for _, path := range tasks {
			comm, err := os.ReadFile(filepath.Join(filepath.Dir(path), "comm"))
			if err != nil || strings.HasPrefix(string(comm), "iou-") {
				continue // exited, or a kernel worker
			}
			b, err := os.ReadFile(path)
			if err != nil {
				continue // the thread exited
			}
			if nr, _, _ := strings.Cut(string(b), " "); nr == enter {
				seen[path]++
				last[path] = strings.TrimSpace(string(b))
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	for path, n := range seen {
		if n == looks {
			t.Fatalf("a thread is blocked in io_uring_enter (%s: %s)", path, last[path])
		}
	}
	if _, err := unix.Write(wr, make([]byte, depth)); err != nil {
		t.Fatal(err)
	}
	for range depth {
		if err := <-results; err != nil {
			t.Fatalf("read of the pipe: %v", err)
		}
	}
}
