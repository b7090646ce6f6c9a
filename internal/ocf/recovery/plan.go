package recovery

import (
	"cmp"
	"errors"
	"fmt"
	"math/bits"
	"slices"
	"strings"

	"blockcache/internal/bdev"
	"blockcache/internal/ocf/metadata"
)

// Options configure Analyze.
type Options struct {
	// LineSize, if not 0, is the cache line size in bytes: for a cache
	// whose superblocks are lost and whose entry area cannot tell it.
	LineSize int64
	// Progress, if set, is told how far the reads are: op "scan" counts
	// sectors of the tag scan, "entries" entry sectors decoded.
	Progress func(op string, done, total int64)
}

// Plan is what Analyze found on a cache device: where the metadata came
// from, the dirty lines whose entries are intact (what Execute writes
// back), and what cannot be recovered.
type Plan struct {
	DevBytes int64
	// Superblock is the newest valid superblock copy, nil when neither is
	// readable; SuperblockCopy names it ("A" or "B").
	Superblock     *metadata.Superblock
	SuperblockCopy string
	// SuperblockProblems says, per copy, why it is not valid.
	SuperblockProblems []string
	// Scan is the tag scan that stood in for lost superblocks.
	Scan *TagScan
	// Tag is the cache's tag: the superblock's, or the one most intact
	// entry sectors carry.
	Tag metadata.Tag
	// Geometry is the layout used to read the entries; GeometryFrom says
	// where it came from.
	Geometry     metadata.Geometry
	GeometryFrom string
	// DamagedSectors counts entry sectors that could not be read or
	// decoded; their lines are in Lost.
	DamagedSectors int64
	// MappedLines counts the lines intact entries map.
	MappedLines int64
	// Dirty are the lines with dirty sectors, ordered by core and core
	// line.
	Dirty []DirtyLine
	// Cores says what each core with dirty data must take.
	Cores map[uint16]*CoreNeed
	// Lost is what cannot be recovered, in cache line order.
	Lost []Loss
}

// DirtyLine is a cache line whose intact entry claims dirty sectors.
type DirtyLine struct {
	Line     int64 // cache line index
	Core     uint16
	CoreLine uint32
	Dirty    [2]uint64 // sector mask, bit i = sector i of the line
}

// CoreNeed is what one core must take.
type CoreNeed struct {
	ID uint16
	// Record is the superblock's record of the core, nil when unknown.
	Record *metadata.CoreRecord
	// Lines and Bytes count its dirty lines and dirty bytes.
	Lines, Bytes int64
	// EndBytes is the end of its last dirty sector: the core device must
	// be at least this large.
	EndBytes int64
}

// Loss is a range of cache lines whose dirty data cannot be written back.
type Loss struct {
	FirstLine, LastLine int64
	// DataOffset and DataBytes say where the lines' data is on the cache
	// device.
	DataOffset, DataBytes int64
	// EntryOffset and EntryBytes say where their damaged entries are;
	// EntryBytes is 0 when the entries are intact (the data is not).
	EntryOffset, EntryBytes int64
	Reason                  string
}

func (l Loss) String() string {
	s := fmt.Sprintf("lines %d..%d (data at cache bytes %d..%d", l.FirstLine, l.LastLine, l.DataOffset, l.DataOffset+l.DataBytes-1)
	if l.EntryBytes > 0 {
		s += fmt.Sprintf(", entries at bytes %d..%d", l.EntryOffset, l.EntryOffset+l.EntryBytes-1)
	}
	return s + "): " + l.Reason
}

// Extent is one run of dirty sectors: where it is on the cache device and
// where it goes on its core.
type Extent struct {
	Core                    uint16
	Line                    int64
	CacheOffset, CoreOffset int64
	Bytes                   int64
}

// Extents returns the runs of dirty sectors of line d.
func (p *Plan) Extents(d DirtyLine) []Extent {
	ls := p.Geometry.LineSize
	var out []Extent
	forRuns(d.Dirty, func(first, n int) {
		out = append(out, Extent{
			Core:        d.Core,
			Line:        d.Line,
			CacheOffset: p.Geometry.DataOffset + d.Line*ls + int64(first)*metadata.SectorBytes,
			CoreOffset:  int64(d.CoreLine)*ls + int64(first)*metadata.SectorBytes,
			Bytes:       int64(n) * metadata.SectorBytes,
		})
	})
	return out
}

// DirtyBytes is the sum of Cores' Bytes.
func (p *Plan) DirtyBytes() int64 {
	var n int64
	for _, c := range p.Cores {
		n += c.Bytes
	}
	return n
}

// forRuns calls fn for each run of set bits of m: its first bit and length.
func forRuns(m [2]uint64, fn func(first, n int)) {
	start := -1
	for i := 0; i <= 128; i++ {
		set := i < 128 && m[i/64]&(1<<(i%64)) != 0
		switch {
		case set && start < 0:
			start = i
		case !set && start >= 0:
			fn(start, i-start)
			start = -1
		}
	}
}

// Analyze reads the metadata of the cache on dev, trusting no part of it
// to be whole: the geometry comes from opts.LineSize, else from a valid
// superblock copy, else from the entry area itself; each entry sector is
// checked on its own and a damaged one costs only its own lines. It fails
// with ErrNoCache when dev shows no sign of a cache, ErrGeometry when the
// line size cannot be told; a device read error on the entry area is a
// loss, not a failure. It writes nothing.
func Analyze(dev bdev.Device, opts Options) (*Plan, error) {
	info := dev.Info()
	p := &Plan{DevBytes: info.SizeBytes(), Cores: map[uint16]*CoreNeed{}}
	if p.DevBytes < metadata.SuperblockArea {
		return nil, fmt.Errorf("%w: %q is %d bytes, smaller than the superblock area", ErrNoCache, info.Name, p.DevBytes)
	}
	p.readSuperblocks(dev)
	sb := p.Superblock
	if sb != nil {
		p.Tag = metadata.TagOf(sb.CacheID)
	} else {
		var scanProgress func(done, total int64)
		if opts.Progress != nil {
			scanProgress = func(done, total int64) { opts.Progress("scan", done, total) }
		}
		p.Scan = ScanTags(dev, scanProgress)
		var n int64
		if p.Tag, n = p.Scan.Dominant(); n == 0 {
			return nil, fmt.Errorf("%w: %q: no readable superblock (%s) and none of the %d sectors of the entry area carries a cache tag",
				ErrNoCache, info.Name, strings.Join(p.SuperblockProblems, "; "), p.Scan.Sectors)
		}
	}
	var err error
	switch {
	case opts.LineSize != 0:
		p.Geometry, err = givenGeometry(p.DevBytes, opts.LineSize, sb)
		p.GeometryFrom = fmt.Sprintf("%d KiB lines as given", opts.LineSize>>10)
	case sb != nil:
		p.Geometry = sb.Geometry
		p.GeometryFrom = fmt.Sprintf("superblock copy %s (sequence %d)", p.SuperblockCopy, sb.Seq)
	default:
		last := p.Scan.Last[p.Tag]
		p.Geometry, err = deriveGeometry(p.DevBytes, last)
		p.GeometryFrom = fmt.Sprintf("the entry area (%d intact sectors of cache %s, the last at %d)", p.Scan.Tags[p.Tag], p.Tag, last)
	}
	if err != nil {
		return nil, fmt.Errorf("%q: %w", info.Name, err)
	}
	p.readEntries(dev, opts.Progress)
	p.dropConflicts()
	p.sumCores()
	return p, nil
}

// readSuperblocks decodes both copies and keeps the newest valid one.
func (p *Plan) readSuperblocks(dev bdev.Device) {
	var newest *metadata.Superblock
	for i, name := range []string{"A", "B"} {
		off := int64(i) * metadata.SuperblockCopyBytes
		buf := make([]byte, metadata.SuperblockCopyBytes)
		if err := dev.ReadAt(buf, off); err != nil {
			p.SuperblockProblems = append(p.SuperblockProblems, fmt.Sprintf("copy %s (byte %d): %v", name, off, err))
			continue
		}
		sb, err := metadata.DecodeSuperblock(buf, p.DevBytes)
		switch {
		case errors.Is(err, metadata.ErrNoMetadata):
			p.SuperblockProblems = append(p.SuperblockProblems, fmt.Sprintf("copy %s (byte %d): no superblock", name, off))
		case err != nil:
			p.SuperblockProblems = append(p.SuperblockProblems, fmt.Sprintf("copy %s (byte %d): %v", name, off, err))
		case newest == nil || sb.Seq > newest.Seq:
			newest, p.SuperblockCopy = sb, name
		}
	}
	p.Superblock = newest
}

// readEntries decodes every entry sector of the geometry, collecting the
// dirty lines of intact ones and a loss for each run of damaged ones.
func (p *Plan) readEntries(dev bdev.Device, progress func(op string, done, total int64)) {
	g := p.Geometry
	spl := g.SectorsPerLine()
	eps := int64(metadata.EntriesPerSector(spl))
	entries := make([]metadata.Entry, eps)
	var pending *Loss // the run of damaged sectors being extended
	var pendingLast int64
	flush := func() {
		if pending != nil {
			p.Lost = append(p.Lost, *pending)
			pending = nil
		}
	}
	damaged := func(s int64, err error) {
		p.DamagedSectors++
		first, last := s*eps, min((s+1)*eps, g.NumLines)-1
		if pending != nil && pendingLast == s-1 {
			pending.LastLine = last
			pending.DataBytes = (last - pending.FirstLine + 1) * g.LineSize
			pending.EntryBytes += metadata.SectorBytes
			pendingLast = s
			return
		}
		flush()
		pending = &Loss{
			FirstLine: first, LastLine: last,
			DataOffset: g.DataOffset + first*g.LineSize, DataBytes: (last - first + 1) * g.LineSize,
			EntryOffset: g.EntrySectorOffset(s), EntryBytes: metadata.SectorBytes,
			Reason: err.Error(),
		}
		pendingLast = s
	}
	var sectorProgress func(done, total int64)
	if progress != nil {
		sectorProgress = func(done, total int64) { progress("entries", done, total) }
	}
	readEntryArea(dev, g.EntrySectors, sectorProgress, func(s int64, b []byte, err error) {
		if err == nil {
			err = metadata.DecodeSectorOfTag(b, uint32(s), p.Tag, spl, entries)
		}
		if err != nil {
			damaged(s, err)
			return
		}
		for slot, e := range entries {
			i := s*eps + int64(slot)
			if i >= g.NumLines || !e.Mapped() {
				continue
			}
			p.MappedLines++
			if e.Dirty != [2]uint64{} {
				p.Dirty = append(p.Dirty, DirtyLine{Line: i, Core: e.Core, CoreLine: e.CoreLine, Dirty: e.Dirty})
			}
		}
	})
	flush()
}

// dropConflicts moves to Lost the dirty lines that claim the same core
// line as another: which of them is newer cannot be told.
func (p *Plan) dropConflicts() {
	slices.SortFunc(p.Dirty, func(a, b DirtyLine) int {
		return cmp.Or(cmp.Compare(a.Core, b.Core), cmp.Compare(a.CoreLine, b.CoreLine), cmp.Compare(a.Line, b.Line))
	})
	g := p.Geometry
	kept := p.Dirty[:0]
	for i := 0; i < len(p.Dirty); {
		j := i + 1
		for j < len(p.Dirty) && p.Dirty[j].Core == p.Dirty[i].Core && p.Dirty[j].CoreLine == p.Dirty[i].CoreLine {
			j++
		}
		if j == i+1 {
			kept = append(kept, p.Dirty[i])
		} else {
			var lines []int64
			for _, d := range p.Dirty[i:j] {
				lines = append(lines, d.Line)
			}
			for _, d := range p.Dirty[i:j] {
				p.Lost = append(p.Lost, Loss{
					FirstLine: d.Line, LastLine: d.Line,
					DataOffset: g.DataOffset + d.Line*g.LineSize, DataBytes: g.LineSize,
					Reason: fmt.Sprintf("lines %v all claim dirty data of core %d line %d; which is newest cannot be told", lines, d.Core, d.CoreLine),
				})
			}
		}
		i = j
	}
	p.Dirty = kept
	slices.SortFunc(p.Lost, func(a, b Loss) int { return cmp.Compare(a.FirstLine, b.FirstLine) })
}

// sumCores fills Cores from Dirty.
func (p *Plan) sumCores() {
	records := map[uint16]*metadata.CoreRecord{}
	if p.Superblock != nil {
		for i := range p.Superblock.Cores {
			records[p.Superblock.Cores[i].ID] = &p.Superblock.Cores[i]
		}
	}
	ls := p.Geometry.LineSize
	for _, d := range p.Dirty {
		c := p.Cores[d.Core]
		if c == nil {
			c = &CoreNeed{ID: d.Core, Record: records[d.Core]}
			p.Cores[d.Core] = c
		}
		c.Lines++
		c.Bytes += int64(metadata.Count(d.Dirty)) * metadata.SectorBytes
		lastSector := 127 - bits.LeadingZeros64(d.Dirty[1])
		if d.Dirty[1] == 0 {
			lastSector = 63 - bits.LeadingZeros64(d.Dirty[0])
		}
		c.EndBytes = max(c.EndBytes, int64(d.CoreLine)*ls+int64(lastSector+1)*metadata.SectorBytes)
	}
}

// CoreIDs returns the ids of the cores with dirty data, ascending.
func (p *Plan) CoreIDs() []uint16 {
	ids := make([]uint16, 0, len(p.Cores))
	for id := range p.Cores {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}
