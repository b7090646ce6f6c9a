package ocf

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/google/uuid"

	"blockcache/internal/bdev"
	"blockcache/internal/bdev/malloc"
	"blockcache/internal/bdev/null"
	"blockcache/internal/ocf/metadata"
	"blockcache/internal/sysmem"
)

// heapInUse is the live heap after a full collection.
func heapInUse() int64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}

// TestMemoryNeededMatchesNew measures the heap a real New holds and checks
// MemoryNeeded against it, with and without the nhit table.
func TestMemoryNeededMatchesNew(t *testing.T) {
	for _, tc := range []struct{ dev, line int64 }{
		{1 << 30, 4 << 10},
		{3 << 30, 16 << 10},
		{8 << 30, 64 << 10},
	} {
		for _, nhit := range []bool{false, true} {
			name := strconv.FormatInt(tc.dev>>20, 10) + "MiB/" + strconv.FormatInt(tc.line>>10, 10) + "KiB"
			if nhit {
				name += "/nhit"
			}
			t.Run(name, func(t *testing.T) {
				dev, err := null.New("Cache", uuid.Nil, 512, uint64(tc.dev/512))
				if err != nil {
					t.Fatal(err)
				}
				cfg := Config{LineSize: tc.line, VolatileMetadata: true}
				if nhit {
					cfg.PromotionParams = &PromotionParams{Kind: PromoteNHitKind, InsertionThreshold: 3, TriggerThreshold: 80}
				}
				before := heapInUse()
				c, err := New(dev, cfg)
				if err != nil {
					t.Fatal(err)
				}
				grew := heapInUse() - before
				want := MemoryNeeded(tc.dev, tc.line)
				if !nhit {
					want -= nhitMemory(int64(c.NumLines()))
				}
				t.Logf("%d lines: New holds %d bytes, MemoryNeeded says %d (%.1f bytes per line)", c.NumLines(), grew, want, float64(grew)/float64(c.NumLines()))
				if grew < want*95/100 || grew > want*105/100 {
					t.Errorf("New holds %d bytes, MemoryNeeded says %d: more than 5%% apart", grew, want)
				}
				runtime.KeepAlive(c)
				if err := c.Stop(); err != nil {
					t.Fatal(err)
				}
			})
		}
	}
}

func TestMemoryNeededOfNoLines(t *testing.T) {
	if n := MemoryNeeded(metadata.SuperblockArea, 4<<10); n != 0 {
		t.Errorf("a device with no room for a line needs %d bytes", n)
	}
	if n := MemoryNeeded(1<<30, 3000); n != 0 {
		t.Errorf("an invalid line size needs %d bytes", n)
	}
	// A larger line size needs less: the advice the refusal gives.
	if a, b := MemoryNeeded(1<<40, 4<<10), MemoryNeeded(1<<40, 64<<10); b >= a/8 {
		t.Errorf("1 TiB needs %d bytes with 4 KiB lines and %d with 64 KiB lines", a, b)
	}
}

// fakeMemory is a probe that sees availBytes of MemAvailable and no cgroup.
func fakeMemory(t *testing.T, availBytes int64) sysmem.Probe {
	t.Helper()
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "proc"), 0o755); err != nil {
		t.Fatal(err)
	}
	mi := "MemAvailable: " + strconv.FormatInt(availBytes>>10, 10) + " kB\n"
	if err := os.WriteFile(filepath.Join(root, "proc", "meminfo"), []byte(mi), 0o644); err != nil {
		t.Fatal(err)
	}
	return sysmem.Probe{Root: root}
}

func TestNewRefusesMetadataThatDoesNotFit(t *testing.T) {
	const devBytes = 64 << 30
	dev, err := null.New("Big", uuid.Nil, 512, devBytes/512)
	if err != nil {
		t.Fatal(err)
	}
	need := MemoryNeeded(devBytes, 4<<10)
	avail := (need - 1<<20) &^ 1023 // meminfo counts kB
	before := heapInUse()
	_, err = New(dev, Config{LineSize: 4 << 10, Memory: fakeMemory(t, avail)})
	if grew := heapInUse() - before; grew > 1<<20 {
		t.Errorf("the refused New allocated %d bytes", grew)
	}
	if !errors.Is(err, sysmem.ErrNotEnough) || bdev.Errno(err) != syscall.ENOMEM {
		t.Fatalf("New = %v (errno %v), want ErrNotEnough and ENOMEM", err, bdev.Errno(err))
	}
	for _, s := range []string{
		`cache device "Big"`,
		"device size: 68719476736 bytes",
		"cache line size: 4096 bytes",
		"memory needed: " + strconv.FormatInt(need, 10) + " bytes",
		strconv.FormatInt(avail, 10) + " available",
	} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("message %q lacks %q", err, s)
		}
	}
	// With 64 KiB lines the same device fits.
	c, err := New(dev, Config{LineSize: 64 << 10, VolatileMetadata: true, Memory: fakeMemory(t, avail)})
	if err != nil {
		t.Fatalf("64 KiB lines: %v", err)
	}
	c.Stop()
}

func TestLoadRefusesMetadataThatDoesNotFit(t *testing.T) {
	dev, err := malloc.New("Small", uuid.Nil, 512, 16<<20/512)
	if err != nil {
		t.Fatal(err)
	}
	c, err := New(dev, Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	_, _, err = Load(dev, Config{Memory: fakeMemory(t, 64<<10)})
	if !errors.Is(err, sysmem.ErrNotEnough) || !strings.Contains(err.Error(), "memory needed: ") {
		t.Fatalf("Load with 64 KiB available = %v, want ErrNotEnough with the memory needed", err)
	}
	c, _, err = Load(dev, Config{})
	if err != nil {
		t.Fatalf("Load with the machine's memory: %v", err)
	}
	c.Stop()
}
