// Package bdevtest checks that a bdev.Device keeps the contract documented in
// package bdev. Each device package runs Run on its own devices, so every
// device, base or wrapper, is held to the same rules: aligned in-range IO
// only and nothing applied otherwise, data read back as written, discard and
// write-zeroes exactly as Info's Abilities offer them, no torn blocks under concurrent overlapping
// writes, and ErrClosed after Close.
package bdevtest

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"sync"
	"testing"

	"blockcache/internal/bdev"
)

// MinBlocks is the smallest device, in blocks, Run accepts.
const MinBlocks = 16

// Open returns a fresh device for one subtest, with at least MinBlocks
// blocks. Run closes it; open registers any other cleanup with t.Cleanup.
type Open func(t *testing.T) bdev.Device

// Run runs the conformance subtests, each on a device of its own.
func Run(t *testing.T, open Open) {
	t.Helper()
	for _, tc := range []struct {
		name string
		fn   func(*testing.T, bdev.Device)
	}{
		{"Info", testInfo},
		{"WriteRead", testWriteRead},
		{"RejectsInvalidIO", testRejectsInvalidIO},
		{"Abilities", CheckAbilities},
		{"Discard", testDiscard},
		{"WriteZeroes", testWriteZeroes},
		{"ConcurrentOverlappingWrites", testConcurrentWrites},
		{"Close", testClose},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := open(t)
			info := d.Info()
			if info.NumBlocks < MinBlocks {
				t.Fatalf("device has %d blocks, Run needs at least %d", info.NumBlocks, MinBlocks)
			}
			defer d.Close()
			tc.fn(t, d)
		})
	}
}

// Pattern returns n bytes of reproducible non-zero-looking data for seed.
func Pattern(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(r.Uint32()) | 1
	}
	return p
}

// MustRead reads n bytes at off or fails the test.
func MustRead(t testing.TB, d bdev.Device, off int64, n int) []byte {
	t.Helper()
	p := make([]byte, n)
	if err := d.ReadAt(p, off); err != nil {
		t.Fatalf("ReadAt(%d, %d): %v", off, n, err)
	}
	return p
}

// MustWrite writes p at off or fails the test.
func MustWrite(t testing.TB, d bdev.Device, p []byte, off int64, fua bool) {
	t.Helper()
	if err := d.WriteAt(p, off, fua); err != nil {
		t.Fatalf("WriteAt(%d, %d, fua=%v): %v", off, len(p), fua, err)
	}
}

func testInfo(t *testing.T, d bdev.Device) {
	info := d.Info()
	if info.Name == "" || info.ProductName == "" {
		t.Errorf("Info lacks a name or product name: %+v", info)
	}
	if info.BlockSize == 0 || info.BlockSize%bdev.SectorSize != 0 {
		t.Errorf("block size %d is not a multiple of %d", info.BlockSize, bdev.SectorSize)
	}
	if d.Info() != info {
		t.Error("Info changed between calls")
	}
	if allocs := testing.AllocsPerRun(10, func() { _ = d.Info() }); allocs != 0 {
		t.Errorf("Info allocates %v times", allocs)
	}
}

func testWriteRead(t *testing.T, d bdev.Device) {
	info := d.Info()
	bs := int(info.BlockSize)
	size := info.SizeBytes()
	cases := []struct {
		off int64
		n   int
		fua bool
	}{
		{0, bs, false},
		{int64(bs), 3 * bs, true},
		{size - int64(bs), bs, false},      // last block
		{size - 4*int64(bs), 4 * bs, true}, // tail, overlapping the last block
		{int64(5 * bs), 0, false},          // empty IO is valid
	}
	for i, c := range cases {
		want := Pattern(uint64(i)+1, c.n)
		MustWrite(t, d, want, c.off, c.fua)
		if got := MustRead(t, d, c.off, c.n); !bytes.Equal(got, want) {
			t.Fatalf("case %d: read back differs from what was written at %d", i, c.off)
		}
	}
	if err := d.Flush(); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	// A read of a range spanning several earlier writes sees the latest data.
	want := Pattern(99, 2*bs)
	MustWrite(t, d, want, int64(2*bs), false)
	got := MustRead(t, d, int64(bs), 4*bs)
	if !bytes.Equal(got[bs:3*bs], want) {
		t.Fatal("overwrite not visible to a wider read")
	}
}

func testRejectsInvalidIO(t *testing.T, d bdev.Device) {
	info := d.Info()
	bs := int64(info.BlockSize)
	size := info.SizeBytes()
	orig := Pattern(7, int(4*bs))
	MustWrite(t, d, orig, 0, false)
	MustWrite(t, d, orig[:bs], size-bs, false)

	bad := []struct {
		name string
		off  int64
		n    int64
	}{
		{"misaligned offset", 1, bs},
		{"misaligned length", 0, bs + 1},
		{"half a block", bs / 2, bs / 2},
		{"negative offset", -bs, bs},
		{"past the end", size, bs},
		{"straddling the end", size - bs, 2 * bs},
	}
	for _, b := range bad {
		p := make([]byte, max(b.n, 0)) // zeroes, different from orig
		if err := d.WriteAt(p, b.off, false); !errors.Is(err, bdev.ErrInvalidIO) {
			t.Errorf("%s: WriteAt = %v, want ErrInvalidIO", b.name, err)
		}
		if err := d.ReadAt(p, b.off); !errors.Is(err, bdev.ErrInvalidIO) {
			t.Errorf("%s: ReadAt = %v, want ErrInvalidIO", b.name, err)
		}
		if d.Info().Abilities.Discard {
			if err := bdev.Discard(d, b.off, b.n); !errors.Is(err, bdev.ErrInvalidIO) {
				t.Errorf("%s: Discard = %v, want ErrInvalidIO", b.name, err)
			}
		}
		if d.Info().Abilities.WriteZeroes {
			if err := bdev.WriteZeroes(d, b.off, b.n); !errors.Is(err, bdev.ErrInvalidIO) {
				t.Errorf("%s: WriteZeroes = %v, want ErrInvalidIO", b.name, err)
			}
		}
	}
	if d.Info().Abilities.WriteZeroes {
		if err := bdev.WriteZeroes(d, 0, -bs); !errors.Is(err, bdev.ErrInvalidIO) {
			t.Errorf("negative length: WriteZeroes = %v, want ErrInvalidIO", err)
		}
	}
	if got := MustRead(t, d, 0, int(4*bs)); !bytes.Equal(got, orig) {
		t.Error("a rejected IO changed the start of the device")
	}
	if got := MustRead(t, d, size-bs, int(bs)); !bytes.Equal(got, orig[:bs]) {
		t.Error("a rejected IO changed the last block")
	}
}

// checkZeroedRange writes a pattern over blocks [0, 8), applies op to blocks
// [2, 5), and checks the neighbours kept their data. It returns the blocks
// [2, 5) as read back.
func checkZeroedRange(t *testing.T, d bdev.Device, op func(off, n int64) error) []byte {
	t.Helper()
	bs := int64(d.Info().BlockSize)
	orig := Pattern(3, int(8*bs))
	MustWrite(t, d, orig, 0, false)
	if err := op(2*bs, 3*bs); err != nil {
		t.Fatalf("op on blocks [2,5): %v", err)
	}
	got := MustRead(t, d, 0, int(8*bs))
	if !bytes.Equal(got[:2*bs], orig[:2*bs]) || !bytes.Equal(got[5*bs:], orig[5*bs:]) {
		t.Fatal("op changed blocks outside its range")
	}
	return got[2*bs : 5*bs]
}

func testDiscard(t *testing.T, d bdev.Device) {
	if !d.Info().Abilities.Discard {
		if err := bdev.Discard(d, 0, int64(d.Info().BlockSize)); !errors.Is(err, bdev.ErrNotSupported) {
			t.Fatalf("Discard on a device that cannot = %v, want ErrNotSupported", err)
		}
		return
	}
	got := checkZeroedRange(t, d, func(off, n int64) error { return bdev.Discard(d, off, n) })
	if d.Info().Abilities.ZeroesOnDiscard && !bytes.Equal(got, make([]byte, len(got))) {
		t.Fatal("discarded range does not read back as zeroes")
	}
	if err := bdev.Discard(d, 0, 0); err != nil {
		t.Fatalf("empty Discard: %v", err)
	}
}

func testWriteZeroes(t *testing.T, d bdev.Device) {
	if !d.Info().Abilities.WriteZeroes {
		if err := bdev.WriteZeroes(d, 0, int64(d.Info().BlockSize)); !errors.Is(err, bdev.ErrNotSupported) {
			t.Fatalf("WriteZeroes on a device that cannot = %v, want ErrNotSupported", err)
		}
		return
	}
	got := checkZeroedRange(t, d, func(off, n int64) error { return bdev.WriteZeroes(d, off, n) })
	if !bytes.Equal(got, make([]byte, len(got))) {
		t.Fatal("written-zeroes range does not read back as zeroes")
	}
}

// testConcurrentWrites has writers fill overlapping ranges, each with its own
// byte, and checks that every block ends up holding a single writer's byte.
func testConcurrentWrites(t *testing.T, d bdev.Device) {
	bs := int(d.Info().BlockSize)
	const writers, rounds, span = 8, 40, 6
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			p := bytes.Repeat([]byte{byte(w + 1)}, span*bs)
			for r := range rounds {
				off := int64((w + r) % (MinBlocks - span + 1) * bs)
				if err := d.WriteAt(p, off, r%5 == 0); err != nil {
					t.Errorf("writer %d: %v", w, err)
					return
				}
			}
		})
	}
	wg.Wait()
	got := MustRead(t, d, 0, MinBlocks*bs)
	for b := range MinBlocks {
		blk := got[b*bs : (b+1)*bs]
		if !bytes.Equal(blk, bytes.Repeat(blk[:1], bs)) {
			t.Fatalf("block %d is torn: mixes data of several writers", b)
		}
	}
}

func testClose(t *testing.T, d bdev.Device) {
	bs := int64(d.Info().BlockSize)
	if err := d.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	p := make([]byte, bs)
	ops := map[string]error{
		"ReadAt":  d.ReadAt(p, 0),
		"WriteAt": d.WriteAt(p, 0, false),
		"Flush":   d.Flush(),
	}
	if d.Info().Abilities.Discard {
		ops["Discard"] = bdev.Discard(d, 0, bs)
	}
	if d.Info().Abilities.WriteZeroes {
		ops["WriteZeroes"] = bdev.WriteZeroes(d, 0, bs)
	}
	for name, err := range ops {
		if !errors.Is(err, bdev.ErrClosed) {
			t.Errorf("%s after Close = %v, want ErrClosed", name, err)
		}
	}
	if d.Info().Name == "" {
		t.Error("Info unusable after Close")
	}
	if err := d.Close(); err != nil && !errors.Is(err, bdev.ErrClosed) {
		t.Errorf("second Close = %v, want nil or ErrClosed", err)
	}
}
