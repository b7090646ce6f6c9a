package errinj_test

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"syscall"
	"testing"

	"github.com/google/uuid"

	"blockcache/internal/bdev"
	"blockcache/internal/bdev/bdevtest"
	"blockcache/internal/bdev/errinj"
	"blockcache/internal/bdev/null"
)

func TestConformanceWithoutFaults(t *testing.T) {
	bdevtest.Run(t, func(t *testing.T) bdev.Device { return errinj.Wrap(bdevtest.NewMalloc(t, "Malloc0", 64), errinj.Any()) })
}

// TestConformanceWithCorruptionOffTarget arms a corruption that never
// matches in-range data, checking the corruption path leaves IO intact.
func TestConformanceWithCorruptionOffTarget(t *testing.T) {
	bdevtest.Run(t, func(t *testing.T) bdev.Device {
		return errinj.Wrap(bdevtest.NewMalloc(t, "Malloc0", 64), &errinj.Corruption{Offset: 1 << 40, Mask: 0xff})
	})
}

func TestWrapIsTransparent(t *testing.T) {
	m := bdevtest.NewMalloc(t, "Malloc0", 64)
	d := errinj.Wrap(m, errinj.Any())
	if d.Info() != m.Info() || d.Inner() != bdev.Device(m) {
		t.Fatalf("Info %+v, want %+v", d.Info(), m.Info())
	}
}

// checkInjected asserts err is an injected failure of op as documented.
func checkInjected(t *testing.T, err error, op string, off, n int64) {
	t.Helper()
	var ioErr *bdev.IOError
	if !errors.As(err, &ioErr) {
		t.Fatalf("%s: %v is not an IOError", op, err)
	}
	if ioErr.Op != op || ioErr.Offset != off || ioErr.Len != n || ioErr.Dev != "Malloc0" {
		t.Fatalf("IOError = %+v, want op %s at %d+%d", ioErr, op, off, n)
	}
	if !errors.Is(err, errinj.ErrInjected) || !errors.Is(err, syscall.EIO) || bdev.Errno(err) != syscall.EIO {
		t.Fatalf("%s: %v: want ErrInjected with EIO", op, err)
	}
	if want := "injected error"; !bytes.Contains([]byte(err.Error()), []byte(want)) {
		t.Fatalf("message %q lacks %q", err, want)
	}
}

func TestInjectedFailures(t *testing.T) {
	m := bdevtest.NewMalloc(t, "Malloc0", 64)
	c := &errinj.Counter{Injector: errinj.ErrInjected.If(errinj.Or(
		errinj.And(errinj.Writes(), errinj.OnIndex(2)), // the third write
		errinj.And(errinj.Reads(), errinj.InRange(4096, 512)),
		errinj.Flushes(),
		errinj.OfKind(errinj.OpDiscard, errinj.OpWriteZeroes),
	))}
	d := errinj.Wrap(m, c)
	p := bdevtest.Pattern(1, 512)
	for i := range 2 {
		bdevtest.MustWrite(t, d, p, int64(i)*512, false)
	}
	err := d.WriteAt(bytes.Repeat([]byte{0xee}, 512), 512, true)
	checkInjected(t, err, "write", 512, 512)
	if got := bdevtest.MustRead(t, m, 512, 512); !bytes.Equal(got, p) {
		t.Fatal("a failed write reached the inner device")
	}
	bdevtest.MustWrite(t, d, p, 0, false) // the fourth write passes

	bdevtest.MustRead(t, d, 0, 4096) // ends just before the range
	checkInjected(t, d.ReadAt(make([]byte, 1024), 3584), "read", 3584, 1024)
	checkInjected(t, d.Flush(), "flush", 0, 0)
	checkInjected(t, d.Discard(0, 512), "discard", 0, 512)
	checkInjected(t, d.WriteZeroes(0, 512), "write-zeroes", 0, 512)
	if got := bdevtest.MustRead(t, m, 0, 512); !bytes.Equal(got, p) {
		t.Fatal("a failed discard or write-zeroes reached the inner device")
	}
	if c.Load() != 5 {
		t.Fatalf("Counter = %d, want 5 injected", c.Load())
	}

	// Invalid IO is rejected before the injector is asked.
	if err := d.ReadAt(make([]byte, 512), 1); !errors.Is(err, bdev.ErrInvalidIO) {
		t.Fatalf("misaligned read = %v", err)
	}
	if c.Load() != 5 {
		t.Fatalf("an invalid IO reached the injector: Counter = %d", c.Load())
	}
}

func TestInjectedErrnoIsKept(t *testing.T) {
	d := errinj.Wrap(bdevtest.NewMalloc(t, "Malloc0", 64), errinj.InjectorFunc(func(op errinj.Op) error {
		if op.Kind == errinj.OpWrite {
			return fmt.Errorf("disk full: %w", syscall.ENOSPC)
		}
		return fmt.Errorf("gone: %w", bdev.ErrNoSuchDevice)
	}))
	err := d.WriteAt(make([]byte, 512), 0, false)
	if bdev.Errno(err) != syscall.ENOSPC || errors.Is(err, syscall.EIO) {
		t.Fatalf("write = %v (errno %v), want ENOSPC only", err, bdev.Errno(err))
	}
	if err := d.Flush(); bdev.Errno(err) != syscall.ENODEV {
		t.Fatalf("flush = %v (errno %v), want ENODEV", err, bdev.Errno(err))
	}
}

func TestCorruption(t *testing.T) {
	m := bdevtest.NewMalloc(t, "Malloc0", 64)
	tog := &errinj.Toggle{Injector: &errinj.Corruption{Offset: 700, Mask: 0x0f}}
	d := errinj.Wrap(m, tog)
	p := bdevtest.Pattern(5, 1024)
	orig := bytes.Clone(p)

	tog.On()
	bdevtest.MustWrite(t, d, p, 0, false)
	if !bytes.Equal(p, orig) {
		t.Fatal("corrupting a write changed the caller's buffer")
	}
	tog.Off()
	got := bdevtest.MustRead(t, d, 0, 1024)
	want := bytes.Clone(orig)
	want[700] ^= 0x0f
	if !bytes.Equal(got, want) {
		t.Fatal("write not corrupted at byte 700 alone")
	}

	bdevtest.MustWrite(t, d, orig, 0, false)
	tog.On()
	got = bdevtest.MustRead(t, d, 0, 1024)
	if !bytes.Equal(got, want) {
		t.Fatal("read not corrupted at byte 700 alone")
	}
	if stored := bdevtest.MustRead(t, m, 0, 1024); !bytes.Equal(stored, orig) {
		t.Fatal("a corrupted read changed the stored data")
	}
	// Past the end of a short IO, and for ops without data, nothing happens.
	short := bdevtest.MustRead(t, d, 0, 512)
	if !bytes.Equal(short, orig[:512]) {
		t.Fatal("corruption beyond the buffer applied")
	}
	if err := d.Flush(); err != nil {
		t.Fatalf("flush under corruption = %v", err)
	}
	if err := d.Discard(0, 512); err != nil {
		t.Fatalf("discard under corruption = %v", err)
	}
}

func TestRemove(t *testing.T) {
	m := bdevtest.NewMalloc(t, "Malloc0", 64)
	c := &errinj.Counter{Injector: errinj.Any()}
	d := errinj.Wrap(m, c)
	bdevtest.MustWrite(t, d, bdevtest.Pattern(1, 512), 0, false)
	d.Remove()
	errs := map[string]error{
		"read":         d.ReadAt(make([]byte, 512), 0),
		"write":        d.WriteAt(make([]byte, 512), 0, false),
		"flush":        d.Flush(),
		"discard":      d.Discard(0, 512),
		"write-zeroes": d.WriteZeroes(0, 512),
	}
	for op, err := range errs {
		var ioErr *bdev.IOError
		if !errors.As(err, &ioErr) || ioErr.Op != op || !errors.Is(err, bdev.ErrNoSuchDevice) || bdev.Errno(err) != syscall.ENODEV {
			t.Errorf("%s after Remove = %v, want an IOError wrapping ErrNoSuchDevice", op, err)
		}
	}
	if got := bdevtest.MustRead(t, m, 0, 512); !bytes.Equal(got, bdevtest.Pattern(1, 512)) {
		t.Fatal("IO after Remove reached the inner device")
	}
}

// TestRemoveUnderLoad removes the device while IO runs: every IO either
// succeeds or fails with ErrNoSuchDevice, and once Remove returned, all do.
func TestRemoveUnderLoad(t *testing.T) {
	d := errinj.Wrap(bdevtest.NewMalloc(t, "Malloc0", 64), errinj.Any())
	var wg sync.WaitGroup
	start := make(chan struct{})
	for range 4 {
		wg.Go(func() {
			<-start
			p := make([]byte, 4096)
			for {
				err := d.WriteAt(p, 0, false)
				if errors.Is(err, bdev.ErrNoSuchDevice) {
					return
				}
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	close(start)
	d.Remove()
	wg.Wait()
	if err := d.ReadAt(make([]byte, 512), 0); !errors.Is(err, bdev.ErrNoSuchDevice) {
		t.Fatalf("read after Remove = %v", err)
	}
}

// TestWrapperContract: abilities follow the inner device, Close leaves it
// open.
func TestWrapperContract(t *testing.T) {
	bdevtest.RunWrapper(t, func(t *testing.T, inner bdev.Device) bdev.Device { return errinj.Wrap(inner, errinj.Any()) })
}

// TestUnsupportedOpSkipsInjector: an op the inner device lacks is refused
// before the injector sees it.
func TestUnsupportedOpSkipsInjector(t *testing.T) {
	n, err := null.New("Null0", uuid.Nil, 512, 64)
	if err != nil {
		t.Fatal(err)
	}
	c := &errinj.Counter{Injector: errinj.ErrInjected}
	d := errinj.Wrap(n, c)
	err = d.Discard(0, 512)
	if !errors.Is(err, bdev.ErrNotSupported) || bdev.Errno(err) != syscall.EOPNOTSUPP {
		t.Fatalf("Discard over a device without it = %v, want ErrNotSupported", err)
	}
	if c.Load() != 0 {
		t.Fatal("an unsupported op reached the injector")
	}
}

// TestCounterMatchesObservedFailures runs random faults under concurrency
// and checks that the callers saw exactly as many injected errors as the
// Counter counted: the check the NBD and RPC layers are meant to make.
func TestCounterMatchesObservedFailures(t *testing.T) {
	c := &errinj.Counter{Injector: errinj.ErrInjected.If(errinj.Randomly(0.2, 7))}
	d := errinj.Wrap(bdevtest.NewMalloc(t, "Malloc0", 64), c)
	var mu sync.Mutex
	seen := 0
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			p := make([]byte, 512)
			for i := range 500 {
				var err error
				if (i+w)%2 == 0 {
					err = d.ReadAt(p, int64(i%64)*512)
				} else {
					err = d.WriteAt(p, int64(i%64)*512, i%7 == 0)
				}
				if errors.Is(err, errinj.ErrInjected) {
					mu.Lock()
					seen++
					mu.Unlock()
				} else if err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	if int64(seen) != c.Load() || seen == 0 {
		t.Fatalf("callers saw %d injected errors, Counter says %d", seen, c.Load())
	}
}
