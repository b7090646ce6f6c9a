package recovery

import (
	"errors"
	"fmt"

	"blockcache/internal/bdev"
)

// Check verifies that cores holds a device for every core with dirty data
// and that each is large enough for it, naming every problem: errors
// wrapping ErrCoreMissing or ErrCoreTooSmall, joined.
func (p *Plan) Check(cores map[uint16]bdev.Device) error {
	var errs []error
	for _, id := range p.CoreIDs() {
		need := p.Cores[id]
		dev := cores[id]
		if dev == nil {
			errs = append(errs, fmt.Errorf("core %d%s: %d dirty lines (%d bytes): %w", id, recordedAs(need), need.Lines, need.Bytes, ErrCoreMissing))
			continue
		}
		if info := dev.Info(); info.SizeBytes() < need.EndBytes {
			errs = append(errs, fmt.Errorf("core %d: %q is %d bytes, but its dirty data reaches byte %d: %w", id, info.Name, info.SizeBytes(), need.EndBytes, ErrCoreTooSmall))
		}
	}
	return errors.Join(errs...)
}

// recordedAs describes what the superblock recorded of a core, if it did.
func recordedAs(need *CoreNeed) string {
	if need.Record == nil {
		return ""
	}
	return fmt.Sprintf(" (recorded as %q, %d bytes)", need.Record.CoreName, need.Record.SizeBytes)
}

// Result is what Execute wrote.
type Result struct {
	// Lines counts the dirty lines written back; Bytes the dirty bytes per
	// core.
	Lines int64
	Bytes map[uint16]int64
	// Lost are the dirty lines whose data the cache device failed to read.
	Lost []Loss
}

// Execute writes every dirty line of the plan back to its core (cores as
// Check accepts them), then flushes each core. A line the cache device
// fails to read is a loss and the rest goes on; a core write or flush
// failure stops it, with what was written so far in the result. The cache
// device is only read. progress, if set, is told lines done of total.
func (p *Plan) Execute(cache bdev.Device, cores map[uint16]bdev.Device, progress func(done, total int64)) (*Result, error) {
	if err := p.Check(cores); err != nil {
		return nil, err
	}
	res := &Result{Bytes: map[uint16]int64{}}
	g := p.Geometry
	line := make([]byte, g.LineSize)
	var rmw []byte
	for n, d := range p.Dirty {
		off := g.DataOffset + d.Line*g.LineSize
		if err := cache.ReadAt(line, off); err != nil {
			res.Lost = append(res.Lost, Loss{FirstLine: d.Line, LastLine: d.Line, DataOffset: off, DataBytes: g.LineSize,
				Reason: fmt.Sprintf("dirty data of core %d line %d unreadable: %v", d.Core, d.CoreLine, err)})
			continue
		}
		core := cores[d.Core]
		for _, e := range p.Extents(d) {
			data := line[e.CacheOffset-off : e.CacheOffset-off+e.Bytes]
			var err error
			if rmw, err = writeAligned(core, data, e.CoreOffset, rmw); err != nil {
				return res, fmt.Errorf("write back core %d line %d (core bytes %d..%d, from cache bytes %d..): %w; %d of %d dirty lines were written back before it",
					d.Core, d.CoreLine, e.CoreOffset, e.CoreOffset+e.Bytes-1, e.CacheOffset, err, res.Lines, len(p.Dirty))
			}
			res.Bytes[d.Core] += e.Bytes
		}
		res.Lines++
		if progress != nil {
			progress(int64(n+1), int64(len(p.Dirty)))
		}
	}
	for _, id := range p.CoreIDs() {
		if err := cores[id].Flush(); err != nil {
			return res, fmt.Errorf("flush core %d after writing back %d bytes: %w", id, res.Bytes[id], err)
		}
	}
	return res, nil
}

// writeAligned writes data at off on dev, whose blocks may be larger than
// a sector: a partial block is read, patched and written whole. buf is
// scratch space, returned for reuse.
func writeAligned(dev bdev.Device, data []byte, off int64, buf []byte) ([]byte, error) {
	bs := int64(dev.Info().BlockSize)
	start := off / bs * bs
	end := (off + int64(len(data)) + bs - 1) / bs * bs
	if start == off && end == off+int64(len(data)) {
		return buf, dev.WriteAt(data, off, false)
	}
	if int64(cap(buf)) < end-start {
		buf = make([]byte, end-start)
	}
	b := buf[:end-start]
	if err := dev.ReadAt(b, start); err != nil {
		return buf, err
	}
	copy(b[off-start:], data)
	return buf, dev.WriteAt(b, start, false)
}
