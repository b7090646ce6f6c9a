package recovery_test

import (
	"testing"

	"github.com/google/uuid"

	"blockcache/internal/bdev/malloc"
	"blockcache/internal/ocf"
	"blockcache/internal/ocf/ocftest"
	"blockcache/internal/ocf/recovery"
)

// FuzzAnalyze damages a real write-back cache image anywhere in its
// superblocks and entry area and reads it as recover does: whatever the
// bytes, Analyze returns an error or a plan whose dirty lines lie inside
// the geometry it chose, and never panics.
func FuzzAnalyze(f *testing.F) {
	env := ocftest.New(f, ocftest.Options{Lines: 256, Mode: ocf.ModeWB, CoreBytes: 1 << 20, SeqCutoff: ocf.CutoffNever{}})
	for i := range 64 {
		p := make([]byte, 512*(1+i%9))
		p[0] = byte(i)
		if err := env.Cores[0].WriteAt(p, int64(i)*12288, false); err != nil {
			f.Fatal(err)
		}
	}
	if err := env.Cores[0].Flush(); err != nil {
		f.Fatal(err)
	}
	image := make([]byte, env.CacheDev.Info().SizeBytes())
	if err := env.CacheDev.ReadAt(image, 0); err != nil {
		f.Fatal(err)
	}
	f.Add(uint16(0), []byte{0})                // superblock A's magic
	f.Add(uint16(128), make([]byte, 64<<10))   // superblock B zeroed
	f.Add(uint16(256), []byte("\xff\xff\xff")) // the first entry sector's checksum
	f.Add(uint16(257), []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20})
	f.Fuzz(func(t *testing.T, sector uint16, data []byte) {
		off := int(sector) * 512
		if off >= len(image) {
			return
		}
		damaged := append([]byte(nil), image...)
		copy(damaged[off:], data)
		dev, err := malloc.New("cache", uuid.Nil, 512, uint64(len(damaged)/512))
		if err != nil {
			t.Fatal(err)
		}
		defer dev.Close()
		if err := dev.WriteAt(damaged, 0, false); err != nil {
			t.Fatal(err)
		}
		plan, err := recovery.Analyze(dev, recovery.Options{})
		if err != nil {
			return
		}
		spl := plan.Geometry.SectorsPerLine()
		for _, d := range plan.Dirty {
			if d.Line < 0 || d.Line >= plan.Geometry.NumLines {
				t.Fatalf("dirty line %d outside the %d lines of the geometry", d.Line, plan.Geometry.NumLines)
			}
			for k := spl; k < 128; k++ {
				if d.Dirty[k/64]>>(k%64)&1 != 0 {
					t.Fatalf("line %d: dirty mask %x beyond its %d sectors", d.Line, d.Dirty, spl)
				}
			}
		}
		if end := plan.Geometry.DataOffset + plan.Geometry.NumLines*plan.Geometry.LineSize; end > plan.DevBytes {
			t.Fatalf("geometry ends at %d, past the device's %d bytes", end, plan.DevBytes)
		}
	})
}
