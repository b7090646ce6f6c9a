package metadata_test

import (
	"testing"

	"pgregory.net/rapid"

	"blockcache/internal/ocf/metadata"
)

var lineSizes = []int64{4 << 10, 8 << 10, 16 << 10, 32 << 10, 64 << 10}

// checkGeometry checks g, computed for devBytes, against the layout rules:
// entries for every line between the superblocks and the data area, no
// sector more than needed, the data area 4 KiB aligned and inside the
// device, and no room for one more line.
func checkGeometry(t *rapid.T, devBytes int64, g metadata.Geometry) {
	ls := g.LineSize
	eps := int64(metadata.EntriesPerSector(int(ls / metadata.SectorBytes)))
	if g.NumLines < 0 {
		t.Fatalf("%d lines", g.NumLines)
	}
	if next := metadata.DeviceBytesFor(g.NumLines+1, ls); next <= devBytes {
		t.Fatalf("%d lines on %d bytes, but %d lines fit in %d bytes", g.NumLines, devBytes, g.NumLines+1, next)
	}
	if g.NumLines == 0 {
		return
	}
	if g.EntrySectors*eps < g.NumLines || (g.EntrySectors-1)*eps >= g.NumLines {
		t.Fatalf("%d entry sectors of %d entries for %d lines", g.EntrySectors, eps, g.NumLines)
	}
	entriesEnd := g.EntrySectorOffset(g.EntrySectors)
	if g.DataOffset%metadata.DataAlign != 0 || g.DataOffset < entriesEnd || g.DataOffset-entriesEnd >= metadata.DataAlign {
		t.Fatalf("data offset %d for entries ending at %d", g.DataOffset, entriesEnd)
	}
	if end := g.DataOffset + g.NumLines*ls; end > devBytes {
		t.Fatalf("data area ends at %d, past the %d-byte device", end, devBytes)
	}
	if s, slot := g.SectorOfLine(g.NumLines - 1); s != g.EntrySectors-1 || int64(slot) != (g.NumLines-1)%eps {
		t.Fatalf("last line's entry in sector %d slot %d of %d sectors", s, slot, g.EntrySectors)
	}
}

func TestGeometryProperties(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		ls := rapid.SampledFrom(lineSizes).Draw(t, "lineSize")
		devBytes := rapid.OneOf(
			rapid.Int64Range(0, 4<<20), // around the metadata area
			rapid.Int64Range(0, 1<<44), // up to 16 TiB
			rapid.Map(rapid.Int64Range(0, 1<<32), func(n int64) int64 { return n * metadata.SectorBytes }),
		).Draw(t, "devBytes")
		g := metadata.ComputeGeometry(devBytes, ls)
		if g.LineSize != ls {
			t.Fatalf("line size %d, want %d", g.LineSize, ls)
		}
		checkGeometry(t, devBytes, g)
	})
}

func TestDeviceBytesForIsExact(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		ls := rapid.SampledFrom(lineSizes).Draw(t, "lineSize")
		n := rapid.OneOf(rapid.Int64Range(0, 200), rapid.Int64Range(0, 1<<28)).Draw(t, "lines")
		dev := metadata.DeviceBytesFor(n, ls)
		if dev%metadata.DataAlign != 0 {
			t.Fatalf("DeviceBytesFor(%d) = %d, not 4 KiB aligned", n, dev)
		}
		if g := metadata.ComputeGeometry(dev, ls); g.NumLines != n {
			t.Fatalf("DeviceBytesFor(%d) = %d holds %d lines", n, dev, g.NumLines)
		}
		if n > 0 {
			if g := metadata.ComputeGeometry(dev-1, ls); g.NumLines != n-1 {
				t.Fatalf("one byte less than DeviceBytesFor(%d) holds %d lines", n, g.NumLines)
			}
		}
		// Every size between DeviceBytesFor(n) and DeviceBytesFor(n+1) holds n.
		next := metadata.DeviceBytesFor(n+1, ls)
		mid := rapid.Int64Range(dev, next-1).Draw(t, "between")
		if g := metadata.ComputeGeometry(mid, ls); g.NumLines != n {
			t.Fatalf("%d bytes, between sizes for %d and %d lines, holds %d", mid, n, n+1, g.NumLines)
		}
		checkGeometry(t, mid, metadata.ComputeGeometry(mid, ls))
	})
}

// TestDeviceBytesForSmall checks every line count up to a few thousand, where
// the entry area crosses many 4 KiB boundaries: DeviceBytesFor(n) holds n
// lines and is the smallest size that does.
func TestDeviceBytesForSmall(t *testing.T) {
	for _, ls := range lineSizes {
		for n := range int64(5000) {
			dev := metadata.DeviceBytesFor(n, ls)
			if g := metadata.ComputeGeometry(dev, ls); g.NumLines != n {
				t.Fatalf("line size %d: DeviceBytesFor(%d) = %d holds %d lines", ls, n, dev, g.NumLines)
			}
			if g := metadata.ComputeGeometry(dev-1, ls); n > 0 && g.NumLines != n-1 {
				t.Fatalf("line size %d: DeviceBytesFor(%d)-1 holds %d lines, so %d is not the smallest size", ls, n, g.NumLines, dev)
			}
		}
	}
}

func TestGeometryKnownSizes(t *testing.T) {
	for _, c := range []struct {
		devBytes, lineSize int64
		want               metadata.Geometry
	}{
		{0, 4096, metadata.Geometry{LineSize: 4096}},
		{metadata.SuperblockArea, 4096, metadata.Geometry{LineSize: 4096}},
		{metadata.SuperblockArea + 8191, 4096, metadata.Geometry{LineSize: 4096}},
		// One entry sector, padded to 4 KiB, then one line.
		{metadata.SuperblockArea + 8192, 4096, metadata.Geometry{LineSize: 4096, NumLines: 1, EntrySectors: 1, DataOffset: metadata.SuperblockArea + 4096}},
		{1 << 30, 64 << 10, metadata.Geometry{LineSize: 64 << 10, NumLines: 16371, EntrySectors: 1365, DataOffset: 831488}},
		{1 << 40, 4096, metadata.Geometry{LineSize: 4096, NumLines: 267752382, EntrySectors: 5464335, DataOffset: 2797871104}},
	} {
		if g := metadata.ComputeGeometry(c.devBytes, c.lineSize); g != c.want {
			t.Errorf("ComputeGeometry(%d, %d) = %+v, want %+v", c.devBytes, c.lineSize, g, c.want)
		}
	}
}
