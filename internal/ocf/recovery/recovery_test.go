package recovery_test

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/google/uuid"

	"blockcache/internal/bdev"
	"blockcache/internal/bdev/errinj"
	"blockcache/internal/bdev/malloc"
	"blockcache/internal/ocf"
	"blockcache/internal/ocf/metadata"
	"blockcache/internal/ocf/ocftest"
	"blockcache/internal/ocf/recovery"
)

// fixture is a write-back cache whose cores started with random data and
// were then written through the cache (want: what the volumes hold).
// Nothing was cleaned: the cores hold orig, which lacks the dirty data on
// the cache device.
type fixture struct {
	env        *ocftest.Env
	lineSize   int64
	orig, want [][]byte
}

const coreBytes = 2 << 20

func newFixture(t *testing.T, lineSize int64, cores int, seed uint64) *fixture {
	t.Helper()
	return newFixtureWith(t, ocftest.Options{LineSize: lineSize, Cores: cores}, seed)
}

// newFixtureWith builds the fixture on a cache of opts, whose lines,
// mode and core size it sets.
func newFixtureWith(t *testing.T, opts ocftest.Options, seed uint64) *fixture {
	t.Helper()
	opts.Lines, opts.Mode, opts.CoreBytes = 512, ocf.ModeWB, coreBytes
	env := ocftest.New(t, opts)
	lineSize, cores := opts.LineSize, opts.Cores
	f := &fixture{env: env, lineSize: lineSize}
	r := rand.New(rand.NewPCG(seed, 0x7265636f76))
	for _, dev := range env.CoreDevs {
		b := make([]byte, coreBytes)
		for j := range b {
			b[j] = byte(r.Uint32())
		}
		if err := dev.WriteAt(b, 0, false); err != nil {
			t.Fatal(err)
		}
		f.orig = append(f.orig, nil)
		f.want = append(f.want, b)
	}
	// Writes of 1 sector to 3 lines, unaligned to lines, on every core,
	// filling well under the cache so that nothing is evicted.
	budget := int64(200) * lineSize
	for written := int64(0); written < budget; {
		core := r.IntN(cores)
		n := int64(1+r.IntN(int(3*lineSize/512))) * 512
		off := r.Int64N((coreBytes-n)/512) * 512
		p := make([]byte, n)
		for j := range p {
			p[j] = byte(r.Uint32())
		}
		if err := env.Cores[core].WriteAt(p, off, false); err != nil {
			t.Fatal(err)
		}
		copy(f.want[core][off:], p)
		written += n
	}
	for _, co := range env.Cores {
		if err := co.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	// A few writes go to the core (pass-through): what the core holds now
	// is what recovery starts from.
	for i, dev := range env.CoreDevs {
		f.orig[i] = read(t, dev, 0, coreBytes)
	}
	return f
}

func read(t *testing.T, dev bdev.Device, off, n int64) []byte {
	t.Helper()
	b := make([]byte, n)
	if err := dev.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	return b
}

func (f *fixture) coreMap() map[uint16]bdev.Device {
	m := map[uint16]bdev.Device{}
	for i, d := range f.env.CoreDevs {
		m[uint16(i)] = d
	}
	return m
}

// zero overwrites n bytes at off of the cache device.
func (f *fixture) zero(t *testing.T, off, n int64) {
	t.Helper()
	if err := f.env.CacheDev.WriteAt(make([]byte, n), off, false); err != nil {
		t.Fatal(err)
	}
}

// verify checks every core sector after recovery: lines the intact plan
// had dirty hold the written data, except the lines of lost (which keep
// the original); everything else is untouched.
func (f *fixture) verify(t *testing.T, intact *recovery.Plan, lost []recovery.Loss) {
	t.Helper()
	expect := make([][]byte, len(f.orig))
	for i := range f.orig {
		expect[i] = bytes.Clone(f.orig[i])
	}
	isLost := func(line int64) bool {
		for _, l := range lost {
			if line >= l.FirstLine && line <= l.LastLine {
				return true
			}
		}
		return false
	}
	for _, d := range intact.Dirty {
		if isLost(d.Line) {
			continue
		}
		for _, e := range intact.Extents(d) {
			copy(expect[d.Core][e.CoreOffset:e.CoreOffset+e.Bytes], f.want[d.Core][e.CoreOffset:])
		}
	}
	for i, dev := range f.env.CoreDevs {
		got := read(t, dev, 0, coreBytes)
		for s := int64(0); s < coreBytes; s += 512 {
			if !bytes.Equal(got[s:s+512], expect[i][s:s+512]) {
				what := "the original data"
				if bytes.Equal(got[s:s+512], f.want[i][s:s+512]) {
					what = "the written data"
				}
				t.Fatalf("core %d sector at byte %d holds %s, not what recovery should leave", i, s, what)
			}
		}
	}
	// Every written sector came back where nothing was lost.
	if len(lost) == 0 {
		for i := range f.want {
			if !bytes.Equal(read(t, f.env.CoreDevs[i], 0, coreBytes), f.want[i]) {
				t.Fatalf("core %d differs from what was written", i)
			}
		}
	}
}

func analyze(t *testing.T, dev bdev.Device, lineSize int64) *recovery.Plan {
	t.Helper()
	p, err := recovery.Analyze(dev, recovery.Options{LineSize: lineSize})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestRecoverDamagedRegions damages one region of the cache device at a
// time and recovers onto the cores: every dirty sector whose entry is
// intact comes back, and what is lost is reported with its lines and
// where they are.
func TestRecoverDamagedRegions(t *testing.T) {
	for _, lineSize := range []int64{4 << 10, 64 << 10} {
		for _, cores := range []int{1, 3} {
			for _, region := range []string{"none", "superblock A", "superblock B", "both superblocks", "one entry sector", "a data line"} {
				name := fmt.Sprintf("%dk/%d cores/%s", lineSize>>10, cores, region)
				t.Run(name, func(t *testing.T) {
					f := newFixture(t, lineSize, cores, uint64(lineSize)+uint64(cores))
					intact := analyze(t, f.env.CacheDev, 0)
					if len(intact.Dirty) == 0 || len(intact.Cores) != cores || len(intact.Lost) != 0 {
						t.Fatalf("intact cache: %d dirty lines, %d cores, lost %v", len(intact.Dirty), len(intact.Cores), intact.Lost)
					}
					g := intact.Geometry
					var cache bdev.Device = f.env.CacheDev
					var wantLost []int64 // lines reported lost
					switch region {
					case "superblock A":
						f.zero(t, 0, metadata.SuperblockCopyBytes)
					case "superblock B":
						f.zero(t, metadata.SuperblockCopyBytes, metadata.SuperblockCopyBytes)
					case "both superblocks":
						f.zero(t, 0, metadata.SuperblockArea)
					case "one entry sector":
						s, _ := g.SectorOfLine(intact.Dirty[len(intact.Dirty)/2].Line)
						b := read(t, f.env.CacheDev, g.EntrySectorOffset(s), 512)
						b[100] ^= 0x5a
						if err := f.env.CacheDev.WriteAt(b, g.EntrySectorOffset(s), false); err != nil {
							t.Fatal(err)
						}
						eps := int64(metadata.EntriesPerSector(g.SectorsPerLine()))
						for i := s * eps; i < min((s+1)*eps, g.NumLines); i++ {
							wantLost = append(wantLost, i)
						}
					case "a data line":
						line := intact.Dirty[0].Line
						cache = errinj.Wrap(f.env.CacheDev, errinj.ErrInjected.If(errinj.And(errinj.Reads(),
							errinj.InRange(g.DataOffset+line*g.LineSize, g.LineSize))))
						wantLost = []int64{line}
					}
					p := analyze(t, cache, 0)
					switch {
					case region == "both superblocks" && (p.Superblock != nil || p.Scan == nil || !strings.Contains(p.GeometryFrom, "entry area")):
						t.Fatalf("both superblocks gone: superblock %v, geometry from %q", p.Superblock, p.GeometryFrom)
					case region == "superblock A" && p.SuperblockCopy != "B", region == "superblock B" && p.SuperblockCopy != "A":
						t.Fatalf("%s damaged: used copy %q", region, p.SuperblockCopy)
					case p.Geometry != g || p.Tag != intact.Tag:
						t.Fatalf("geometry %+v tag %v, want %+v %v", p.Geometry, p.Tag, g, intact.Tag)
					}
					res, err := p.Execute(cache, f.coreMap(), nil)
					if err != nil {
						t.Fatal(err)
					}
					lost := append(append([]recovery.Loss(nil), p.Lost...), res.Lost...)
					var lostLines []int64
					for _, l := range lost {
						if l.DataOffset != g.DataOffset+l.FirstLine*g.LineSize || l.DataBytes != (l.LastLine-l.FirstLine+1)*g.LineSize {
							t.Errorf("loss %v: data offsets do not match its lines", l)
						}
						for i := l.FirstLine; i <= l.LastLine; i++ {
							lostLines = append(lostLines, i)
						}
					}
					if fmt.Sprint(lostLines) != fmt.Sprint(wantLost) {
						t.Fatalf("lost lines %v, want %v (%v)", lostLines, wantLost, lost)
					}
					if region == "one entry sector" && (p.DamagedSectors != 1 || lost[0].EntryBytes != 512 || !strings.Contains(lost[0].Reason, "checksum")) {
						t.Errorf("damaged entry sector reported as %v (%d damaged sectors)", lost, p.DamagedSectors)
					}
					if res.Lines+int64(len(res.Lost)) != int64(len(p.Dirty)) {
						t.Errorf("wrote %d lines and lost %d of %d", res.Lines, len(res.Lost), len(p.Dirty))
					}
					f.verify(t, intact, lost)
				})
			}
		}
	}
}

// TestRecoverGivenLineSize: both superblocks and the last entry sector
// gone, the entry area no longer tells the line size; Analyze says so, and
// recovers once told.
func TestRecoverGivenLineSize(t *testing.T) {
	f := newFixture(t, 8<<10, 2, 5)
	intact := analyze(t, f.env.CacheDev, 0)
	g := intact.Geometry
	f.zero(t, 0, metadata.SuperblockArea)
	f.zero(t, g.EntrySectorOffset(g.EntrySectors-1), 512)
	_, err := recovery.Analyze(f.env.CacheDev, recovery.Options{})
	if !errors.Is(err, recovery.ErrGeometry) || !strings.Contains(err.Error(), "give the line size") {
		t.Fatalf("Analyze = %v, want ErrGeometry asking for the line size", err)
	}
	if _, err := recovery.Analyze(f.env.CacheDev, recovery.Options{LineSize: 12 << 10}); !errors.Is(err, recovery.ErrGeometry) {
		t.Errorf("12 KiB lines accepted: %v", err)
	}
	p := analyze(t, f.env.CacheDev, 8<<10)
	if p.Geometry != g || p.DamagedSectors != 1 {
		t.Fatalf("geometry %+v, %d damaged sectors", p.Geometry, p.DamagedSectors)
	}
	res, err := p.Execute(f.env.CacheDev, f.coreMap(), nil)
	if err != nil {
		t.Fatal(err)
	}
	f.verify(t, intact, append(p.Lost, res.Lost...))
	// A line size against the superblock's is refused.
	f2 := newFixture(t, 4<<10, 1, 6)
	if _, err := recovery.Analyze(f2.env.CacheDev, recovery.Options{LineSize: 8 << 10}); !errors.Is(err, recovery.ErrGeometry) || !strings.Contains(err.Error(), "superblock records 4 KiB") {
		t.Errorf("line size against the superblock: %v", err)
	}
}

// TestRecoverRefusesCores: a core missing or too small is refused before
// anything is written.
func TestRecoverRefusesCores(t *testing.T) {
	f := newFixture(t, 4<<10, 2, 7)
	p := analyze(t, f.env.CacheDev, 0)
	cores := f.coreMap()
	delete(cores, 1)
	if _, err := p.Execute(f.env.CacheDev, cores, nil); !errors.Is(err, recovery.ErrCoreMissing) || !strings.Contains(err.Error(), `core 1 (recorded as "core1"`) {
		t.Fatalf("core 1 missing: %v", err)
	}
	cores[1] = ocftest.New(t, ocftest.Options{CoreBytes: 64 << 10}).CoreDevs[0]
	if _, err := p.Execute(f.env.CacheDev, cores, nil); !errors.Is(err, recovery.ErrCoreTooSmall) || !strings.Contains(err.Error(), "65536 bytes") {
		t.Fatalf("core 1 too small: %v", err)
	}
	for i, dev := range f.env.CoreDevs {
		if !bytes.Equal(read(t, dev, 0, coreBytes), f.orig[i]) {
			t.Fatalf("core %d written although the plan was refused", i)
		}
	}
}

// TestScanTags: a blank device has no tagged sector; a cache's entry area
// is all tagged with its own tag, and survives losing its superblocks.
func TestScanTags(t *testing.T) {
	f := newFixture(t, 4<<10, 1, 8)
	want := analyze(t, f.env.CacheDev, 0)
	f.zero(t, 0, metadata.SuperblockArea)
	s := recovery.ScanTags(f.env.CacheDev, nil)
	tag, n := s.Dominant()
	if tag != metadata.TagOf(f.env.Cache.ID()) || n != want.Geometry.EntrySectors || s.Tagged() != n || s.Last[tag] != n-1 {
		t.Fatalf("scan: tag %v (cache %v), %d sectors (want %d), last %d", tag, f.env.Cache.ID(), n, want.Geometry.EntrySectors, s.Last[tag])
	}
	blank := ocftest.New(t, ocftest.Options{}).CoreDevs[0]
	if s := recovery.ScanTags(blank, nil); s.Tagged() != 0 || s.Sectors == 0 {
		t.Errorf("blank device: %d tagged of %d scanned", s.Tagged(), s.Sectors)
	}
	if _, err := recovery.Analyze(blank, recovery.Options{}); !errors.Is(err, recovery.ErrNoCache) {
		t.Errorf("Analyze of a blank device: %v", err)
	}
}

// TestRecoverCoreBlocks4K: cores replaced by devices with 4 KiB blocks
// take dirty runs of 512 bytes by reading, patching and writing whole
// blocks.
func TestRecoverCoreBlocks4K(t *testing.T) {
	f := newFixture(t, 16<<10, 2, 9)
	f.zero(t, 0, metadata.SuperblockArea)
	p := analyze(t, f.env.CacheDev, 0)
	cores := map[uint16]bdev.Device{}
	for i := range f.env.CoreDevs {
		d, err := malloc.New(fmt.Sprintf("big%d", i), uuid.Nil, 4096, coreBytes/4096)
		if err != nil {
			t.Fatal(err)
		}
		if err := d.WriteAt(f.orig[i], 0, false); err != nil {
			t.Fatal(err)
		}
		f.env.CoreDevs[i] = d
		cores[uint16(i)] = d
	}
	res, err := p.Execute(f.env.CacheDev, cores, nil)
	if err != nil || len(res.Lost) != 0 {
		t.Fatalf("Execute: %v, lost %v", err, res.Lost)
	}
	f.verify(t, p, nil)
}
