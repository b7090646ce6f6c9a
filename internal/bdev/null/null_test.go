package null_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/google/uuid"

	"blockcache/internal/bdev"
	"blockcache/internal/bdev/bdevtest"
	"blockcache/internal/bdev/null"
)

func newNull(t *testing.T, bs uint32, n uint64) *null.Device {
	t.Helper()
	d, err := null.New("Null0", uuid.Nil, bs, n)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func TestNew(t *testing.T) {
	id := uuid.New()
	d, err := null.New("Null0", id, 4096, 1<<40) // 4 PiB costs nothing
	if err != nil {
		t.Fatal(err)
	}
	want := bdev.Info{Name: "Null0", UUID: id, ProductName: "Null disk", BlockSize: 4096, NumBlocks: 1 << 40, Abilities: bdev.Abilities{WriteZeroes: true}}
	if d.Info() != want {
		t.Fatalf("Info = %+v, want %+v", d.Info(), want)
	}
	for _, bad := range []struct {
		bs uint32
		n  uint64
	}{{0, 1}, {100, 1}, {512, 0}, {4096, 1 << 62}} {
		if _, err := null.New("n", id, bad.bs, bad.n); !errors.Is(err, bdev.ErrInvalidIO) {
			t.Errorf("New(bs=%d, n=%d) = %v, want ErrInvalidIO", bad.bs, bad.n, err)
		}
	}
	if d2, _ := null.New("n", uuid.Nil, 512, 1); d2.Info().UUID == uuid.Nil {
		t.Error("nil UUID not replaced")
	}
}

func TestReadsZeroesWritesDropped(t *testing.T) {
	d := newNull(t, 512, 64)
	p := bdevtest.Pattern(1, 4096)
	bdevtest.MustWrite(t, d, p, 0, true)
	got := bytes.Repeat([]byte{0xff}, 4096) // a dirty buffer must be zeroed
	if err := d.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, make([]byte, 4096)) {
		t.Fatal("read after write did not return zeroes")
	}
	// SPDK's null bdev supports write-zeroes but not unmap.
	if a := d.Info().Abilities; a.Discard || !a.WriteZeroes {
		t.Fatal("null device must write zeroes and must not discard")
	}
}

func TestRejectsInvalidIO(t *testing.T) {
	d := newNull(t, 512, 64)
	tests := []struct {
		name string
		err  error
	}{
		{"read misaligned", d.ReadAt(make([]byte, 100), 0)},
		{"write past end", d.WriteAt(make([]byte, 512), 64*512, false)},
		{"write-zeroes negative", d.WriteZeroes(-512, 512)},
		{"write-zeroes misaligned", d.WriteZeroes(1, 512)},
	}
	for _, tc := range tests {
		if !errors.Is(tc.err, bdev.ErrInvalidIO) {
			t.Errorf("%s: %v, want ErrInvalidIO", tc.name, tc.err)
		}
	}
}

func TestClose(t *testing.T) {
	d := newNull(t, 512, 64)
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	errs := []error{d.ReadAt(make([]byte, 512), 0), d.WriteAt(make([]byte, 512), 0, false), d.Flush(), d.WriteZeroes(0, 512)}
	for i, err := range errs {
		if !errors.Is(err, bdev.ErrClosed) || bdev.Errno(err) == 0 {
			t.Errorf("op %d after Close = %v, want ErrClosed", i, err)
		}
	}
	if err := d.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
}
