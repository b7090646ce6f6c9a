package ocf_test

import (
	"runtime"
	"testing"

	"github.com/google/uuid"

	"blockcache/internal/bdev/null"
	"blockcache/internal/ocf"
	"blockcache/internal/ocf/metadata"
)

// TestMetadataBudget pins the metadata cost of a 4 KiB line: at most 16
// bytes on the cache device and 64 bytes of RAM, every structure included
// (measured on a cache of 2^18 lines, over a null device so only the
// engine's memory counts).
func TestMetadataBudget(t *testing.T) {
	const lines = 1 << 18
	const lineSize = 4096
	devBytes := ocf.DeviceBytesFor(lines, lineSize)
	g := metadata.ComputeGeometry(devBytes, lineSize)
	if g.NumLines != lines {
		t.Fatalf("geometry holds %d lines, want %d", g.NumLines, lines)
	}
	diskPerLine := float64(g.DataOffset-metadata.SuperblockArea) / float64(lines)
	if diskPerLine > 16 {
		t.Errorf("metadata on disk: %.1f bytes a line, budget 16", diskPerLine)
	}

	dev, err := null.New("null", uuid.Nil, 512, uint64(devBytes/512))
	if err != nil {
		t.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	c, err := ocf.New(dev, ocf.Config{LineSize: lineSize})
	if err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	ramPerLine := float64(after.HeapAlloc-before.HeapAlloc) / float64(lines)
	runtime.KeepAlive(c)
	if ramPerLine > 64 {
		t.Errorf("metadata in RAM: %.1f bytes a line, budget 64", ramPerLine)
	}
	t.Logf("4 KiB lines: %.1f bytes on disk and %.1f bytes of RAM a line", diskPerLine, ramPerLine)
}
