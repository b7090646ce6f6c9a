package uring

import (
	"bytes"
	"errors"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"runtime/pprof"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestRingMatchesModel: goroutines, more than the ring's depth, issue
// random reads, writes (some RWF_DSYNC), datasyncs, hole punches and
// zero-range fallocates through one ring on one O_DIRECT file (and on a
// buffered one, and through a polling ring), each on blocks of its own,
// against an in-memory model.
// Every read through the ring, and a pread of the same blocks now and
// then, must return the model's bytes; at the end a pread of the whole
// file must equal the model.
func TestRingMatchesModel(t *testing.T) {
	for _, c := range []struct {
		name   string
		direct bool
		poll   time.Duration
	}{{"direct", true, 0}, {"buffered", false, 0}, {"direct-polling", true, time.Millisecond}} {
		direct := c.direct
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			const (
				block   = 4096
				blocks  = 256
				workers = 12
				ops     = 300
			)
			flags := 0
			if direct {
				flags = unix.O_DIRECT
			}
			fd := tempFile(t, t.TempDir(), "model.img", blocks*block, flags)
			r, err := New(4, Options{Poll: c.poll})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { r.Close() })
			if want := c.poll > 0 && kernelAtLeast(t, 5, 19); r.coop != want {
				t.Fatalf("ring with poll budget %v: coop task work %v, want %v", c.poll, r.coop, want)
			}
			model := make([]byte, blocks*block)
			seed := uint64(time.Now().UnixNano())
			t.Logf("seed %d", seed)
			var wg sync.WaitGroup
			errs := make(chan error, workers)
			for w := range workers {
				wg.Go(func() {
					if err := modelWorker(r, fd, model, w, workers, ops, rand.New(rand.NewPCG(seed, uint64(w)))); err != nil {
						errs <- fmt.Errorf("worker %d (seed %d): %w", w, seed, err)
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			got := alignedBuf(blocks * block)
			if n, err := unix.Pread(fd, got, 0); err != nil || n != len(got) {
				t.Fatalf("final pread: %d, %v", n, err)
			}
			if !bytes.Equal(got, model) {
				t.Fatalf("file differs from the model after the run (seed %d)", seed)
			}
		})
	}
}

// modelWorker runs ops random operations on the blocks b with
// b%workers == w, up to 4 contiguous ones at a time.
func modelWorker(r *Ring, fd int, model []byte, w, workers, ops int, rng *rand.Rand) error {
	const block = 4096
	mine := len(model) / block / workers
	buf := alignedBuf(4 * block)
	for op := range ops {
		// A run of 1-4 of this worker's blocks, contiguous in the file
		// when workers is 1, else strided: issue one IO per block.
		first := rng.IntN(mine)
		count := min(1+rng.IntN(4), mine-first)
		for k := range count {
			blk := (first+k)*workers + w
			off := int64(blk) * block
			want := model[off : off+block]
			p := buf[k*block : (k+1)*block]
			switch kind := rng.IntN(10); {
			case kind < 4:
				for i := range p {
					p[i] = byte(rng.Uint32())
				}
				flags := 0
				if rng.IntN(4) == 0 {
					flags = unix.RWF_DSYNC
				}
				n, err := r.Pwrite(fd, p, off, flags)
				if err != nil || n != block {
					return fmt.Errorf("op %d: write block %d: %d, %v", op, blk, n, err)
				}
				copy(want, p)
			case kind < 8:
				n, err := r.Pread(fd, p, off)
				if err != nil || n != block {
					return fmt.Errorf("op %d: read block %d: %d, %v", op, blk, n, err)
				}
				if !bytes.Equal(p, want) {
					return fmt.Errorf("op %d: block %d read through the ring differs from the model", op, blk)
				}
				if rng.IntN(4) == 0 {
					if n, err := unix.Pread(fd, p, off); err != nil || n != block || !bytes.Equal(p, want) {
						return fmt.Errorf("op %d: block %d by pread differs from the model (%d, %v)", op, blk, n, err)
					}
				}
			case kind == 8:
				mode := uint32(unix.FALLOC_FL_PUNCH_HOLE | unix.FALLOC_FL_KEEP_SIZE)
				if rng.IntN(2) == 0 {
					mode = unix.FALLOC_FL_ZERO_RANGE | unix.FALLOC_FL_KEEP_SIZE
				}
				if err := r.Fallocate(fd, mode, off, block); err != nil {
					return fmt.Errorf("op %d: fallocate %#x block %d: %v", op, mode, blk, err)
				}
				clear(want)
			default:
				if err := r.Fsync(fd, rng.IntN(2) == 0); err != nil {
					return fmt.Errorf("op %d: fsync: %v", op, err)
				}
			}
		}
	}
	return nil
}

// TestRingLikeSystemCalls is a property test: random operations, valid
// and not, give through the ring exactly what the same system calls give
// on a twin file: byte counts (short at end of file, 0 beyond it), errnos
// (a bad descriptor, a negative offset, a write to a read-only
// descriptor), and in the end the same contents.
func TestRingLikeSystemCalls(t *testing.T) {
	t.Parallel()
	const size = 64 << 10
	dir := t.TempDir()
	fds := [2]int{tempFile(t, dir, "ring.img", size, 0), tempFile(t, dir, "sys.img", size, 0)}
	var roFds [2]int
	for i, name := range []string{"ring.img", "sys.img"} {
		fd, err := unix.Open(dir+"/"+name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Close(fd) })
		roFds[i] = fd
	}
	r := newTestRing(t, 2)
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 0))
	t.Logf("seed %d", seed)
	bufs := [2][]byte{make([]byte, 16<<10), make([]byte, 16<<10)}
	for op := range 2000 {
		n := rng.IntN(len(bufs[0]) + 1)
		off := int64(rng.IntN(size + 8<<10))
		if rng.IntN(50) == 0 {
			off = -512
		}
		pick := func(i int) int { return fds[i] }
		// One fault at a time: with two, the ring and the system call
		// may check them in another order.
		fault := rng.IntN(20)
		if off < 0 {
			fault = -1
		}
		switch fault {
		case 0:
			pick = func(int) int { return 1 << 20 } // not open
		case 1:
			pick = func(i int) int { return roFds[i] }
		}
		var res [2]string
		kind := rng.IntN(4)
		fill := byte(rng.Uint32())
		for i := range 2 {
			p := bufs[i][:n]
			var got int
			var err error
			switch kind {
			case 0, 1:
				for j := range p {
					p[j] = fill + byte(j)
				}
				if i == 0 {
					got, err = r.Pwrite(pick(i), p, off, 0)
				} else {
					got, err = unix.Pwrite(pick(i), p, off)
				}
			case 2:
				if i == 0 {
					got, err = r.Pread(pick(i), p, off)
				} else {
					got, err = unix.Pread(pick(i), p, off)
				}
				if err == nil {
					got = int(crc32.ChecksumIEEE(p[:got]))
				}
			default:
				mode := uint32(unix.FALLOC_FL_PUNCH_HOLE | unix.FALLOC_FL_KEEP_SIZE)
				if i == 0 {
					err = r.Fallocate(pick(i), mode, off, int64(n))
				} else {
					err = unix.Fallocate(pick(i), mode, off, int64(n))
				}
			}
			if err != nil {
				got = -1 // unix.Pread's count on error; the ring's is 0
			}
			res[i] = fmt.Sprintf("%d %v", got, err)
		}
		if res[0] != res[1] {
			t.Fatalf("op %d (kind %d, %d bytes at %d; seed %d): ring %q, system call %q", op, kind, n, off, seed, res[0], res[1])
		}
	}
	var sizes [2]int64
	for i, fd := range fds {
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			t.Fatal(err)
		}
		sizes[i] = st.Size
	}
	if sizes[0] != sizes[1] {
		t.Fatalf("sizes differ: ring %d, system calls %d", sizes[0], sizes[1])
	}
	a, b := make([]byte, sizes[0]), make([]byte, sizes[1])
	unix.Pread(fds[0], a, 0)
	unix.Pread(fds[1], b, 0)
	if !bytes.Equal(a, b) {
		t.Fatalf("contents differ after the run (seed %d)", seed)
	}
}

// pipeReaders starts n goroutines that each read one byte of the pipe
// through r, and waits until r has no free slot; results arrive on the
// returned channel.
func pipeReaders(t *testing.T, r *Ring, fd, n int) <-chan error {
	t.Helper()
	results := make(chan error, n)
	for range n {
		go func() {
			b := make([]byte, 1)
			_, err := r.Pread(fd, b, -1)
			results <- err
		}()
	}
	waitFor(t, fmt.Sprintf("every slot taken by %d readers", n), func() bool { return len(r.free) == 0 })
	return results
}

func testPipe(t *testing.T) (rd, wr int) {
	t.Helper()
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(p[0]); unix.Close(p[1]) })
	return p[0], p[1]
}

// TestRingBoundsThreads: 200 goroutines read an empty pipe through a ring
// of depth 8. The ring holds 8 reads in the kernel, without a thread
// each, and parks the other 192 in Go; the process creates far fewer
// threads than the 200 blocking pread calls would take. Then every read
// completes, one byte each.
func TestRingBoundsThreads(t *testing.T) {
	const readers, depth = 200, 8
	r := newTestRing(t, depth)
	rd, wr := testPipe(t)
	before := pprof.Lookup("threadcreate").Count()
	results := pipeReaders(t, r, rd, readers)
	time.Sleep(50 * time.Millisecond) // give the waiters time to take threads, were they to
	if grown := pprof.Lookup("threadcreate").Count() - before; grown > 2*depth {
		t.Fatalf("%d threads created for %d readers on a ring of depth %d", grown, readers, depth)
	}
	select {
	case err := <-results:
		t.Fatalf("a read of an empty pipe completed: %v", err)
	default:
	}
	if _, err := unix.Write(wr, make([]byte, readers)); err != nil {
		t.Fatal(err)
	}
	for i := range readers {
		select {
		case err := <-results:
			if err != nil {
				t.Fatalf("read %d: %v", i, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%d of %d reads completed", i, readers)
		}
	}
}

// TestRingCloseCancelsInFlight: Close with reads of an empty pipe in the
// kernel (which never complete by themselves) and more waiting for a slot
// cancels the former (ECANCELED or EINTR), fails the latter with
// ErrClosed, and returns; later operations fail with ErrClosed.
func TestRingCloseCancelsInFlight(t *testing.T) {
	r, err := New(4, Options{})
	if err != nil {
		t.Fatal(err)
	}
	rd, _ := testPipe(t)
	results := pipeReaders(t, r, rd, 10)
	done := make(chan error)
	go func() { done <- r.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Close: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return with reads of a pipe in flight")
	}
	var cancelled, refused int
	for range 10 {
		switch err := <-results; {
		case errors.Is(err, unix.ECANCELED), errors.Is(err, unix.EINTR):
			cancelled++
		case errors.Is(err, ErrClosed):
			refused++
		default:
			t.Fatalf("read in flight at Close: %v", err)
		}
	}
	if cancelled != 4 || refused != 6 {
		t.Fatalf("%d reads cancelled and %d refused, want 4 (the depth) and 6", cancelled, refused)
	}
	if _, err := r.Pread(rd, make([]byte, 1), -1); !errors.Is(err, ErrClosed) {
		t.Fatalf("read after Close: %v, want ErrClosed", err)
	}
	if err := r.Fsync(rd, true); !errors.Is(err, ErrClosed) {
		t.Fatalf("fsync after Close: %v, want ErrClosed", err)
	}
	if err := r.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// TestRingCloseDuringFileIO: Close while goroutines write and read back
// their own blocks of a file at full speed. Every operation either
// completes correctly or fails with ErrClosed, none after the first
// ErrClosed of its goroutine succeeds, and nothing hangs.
func TestRingCloseDuringFileIO(t *testing.T) {
	const block, workers = 4096, 16
	fd := tempFile(t, t.TempDir(), "close.img", workers*block, unix.O_DIRECT)
	r, err := New(4, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	var started sync.WaitGroup
	started.Add(workers)
	for w := range workers {
		wg.Go(func() {
			buf, got := alignedBuf(block), alignedBuf(block)
			off := int64(w) * block
			once := sync.OnceFunc(started.Done)
			defer once()
			for i := 0; ; i++ {
				for j := range buf {
					buf[j] = byte(w + i + j)
				}
				if n, err := r.Pwrite(fd, buf, off, 0); errors.Is(err, ErrClosed) {
					return
				} else if err != nil || n != block {
					errs <- fmt.Errorf("worker %d write %d: %d, %v", w, i, n, err)
					return
				}
				n, err := r.Pread(fd, got, off)
				if errors.Is(err, ErrClosed) {
					return
				}
				if err != nil || n != block || !bytes.Equal(got, buf) {
					errs <- fmt.Errorf("worker %d read %d: %d, %v, equal %v", w, i, n, err, bytes.Equal(got, buf))
					return
				}
				if i == 10 {
					once()
				}
			}
		})
	}
	started.Wait()
	if err := r.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	waited := make(chan struct{})
	go func() { wg.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-time.After(10 * time.Second):
		t.Fatal("workers still running 10s after Close")
	}
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestRingNoAllocs: an operation allocates nothing.
func TestRingNoAllocs(t *testing.T) {
	fd := tempFile(t, t.TempDir(), "alloc.img", 1<<20, unix.O_DIRECT)
	r := newTestRing(t, 8)
	buf := alignedBuf(4096)
	allocs := testing.AllocsPerRun(200, func() {
		if _, err := r.Pwrite(fd, buf, 8192, 0); err != nil {
			t.Fatal(err)
		}
		if _, err := r.Pread(fd, buf, 8192); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%.1f allocations per write and read", allocs)
	}
}

// TestNewUnavailable: a kernel that refuses io_uring gives an error
// wrapping ErrUnavailable and EOPNOTSUPP (not the raw EPERM, which a
// caller would report as a permission problem), saying why.
func TestNewUnavailable(t *testing.T) {
	for _, c := range []struct {
		errno unix.Errno
		why   string
	}{
		{unix.ENOSYS, "built without io_uring"},
		{unix.EPERM, "io_uring_setup: operation not permitted"},
	} {
		_, err := newRing(8, Options{}, func(uint32, *params) (int, error) { return -1, c.errno })
		if !errors.Is(err, ErrUnavailable) || !errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, c.errno) {
			t.Fatalf("setup failing with %v: %v, want ErrUnavailable (EOPNOTSUPP) only", c.errno, err)
		}
		var errno unix.Errno
		if !errors.As(err, &errno) || errno != unix.EOPNOTSUPP {
			t.Fatalf("setup failing with %v: the first errno in the chain is %v", c.errno, errno)
		}
		if !bytes.Contains([]byte(err.Error()), []byte(c.why)) {
			t.Fatalf("setup failing with %v: %q does not say %q", c.errno, err, c.why)
		}
	}
	_, err := newRing(8, Options{}, func(uint32, *params) (int, error) { return -1, unix.ENOMEM })
	if errors.Is(err, ErrUnavailable) || !errors.Is(err, unix.ENOMEM) {
		t.Fatalf("setup failing with ENOMEM: %v", err)
	}
	for _, depth := range []int{0, -1, MaxDepth + 1} {
		if _, err := New(depth, Options{}); !errors.Is(err, unix.EINVAL) {
			t.Fatalf("New(%d): %v, want EINVAL", depth, err)
		}
	}
}

// TestPwriteFlagsReachTheKernel: Pwrite's flags are the kernel's rw_flags:
// RWF_DSYNC writes, and a flag the kernel does not know is refused with
// EOPNOTSUPP, as pwritev2 refuses it.
func TestPwriteFlagsReachTheKernel(t *testing.T) {
	fd := tempFile(t, t.TempDir(), "flags.img", 1<<20, 0)
	r := newTestRing(t, 2)
	p := bytes.Repeat([]byte{7}, 4096)
	if n, err := r.Pwrite(fd, p, 0, unix.RWF_DSYNC); err != nil || n != len(p) {
		t.Fatalf("RWF_DSYNC write: %d, %v", n, err)
	}
	const unknown = 1 << 30
	_, ringErr := r.Pwrite(fd, p, 0, unknown)
	_, sysErr := unix.Pwritev2(fd, [][]byte{p}, 0, unknown)
	if ringErr != unix.EOPNOTSUPP || sysErr != unix.EOPNOTSUPP {
		t.Fatalf("write with unknown flag %#x: ring %v, pwritev2 %v, want EOPNOTSUPP", unknown, ringErr, sysErr)
	}
}
