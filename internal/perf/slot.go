package perf

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/bits"

	"blockcache/internal/aligned"
	"blockcache/internal/latency"
)

// bufAlign aligns every IO buffer, as O_DIRECT on any device needs.
const bufAlign = aligned.Page

// slot is one queue slot of a job: it owns its buffers, its random state,
// its position in the job's sequence and its counts, so slots share
// nothing while they run but the job's stop flag. The counts are read
// after the run, once the slot's goroutine has returned.
type slot struct {
	js    *jobState
	index uint64
	buf   []byte // data written, or read into
	vbuf  []byte // verify: the data read back
	rng   uint64 // xorshift64 state, never 0
	cur   uint64 // sequential workloads: the next IO's index in the range
	seq   uint64 // verify: writes made, so each write's pattern is new

	hist        Histogram
	completed   uint64
	failed      uint64
	miscompares uint64
	end         latency.Stamp // when the slot's last IO returned
}

// newSlots makes js's slots with their buffers, carved from one aligned
// allocation.
func newSlots(js *jobState) []*slot {
	per := 1
	if js.Workload == Verify {
		per = 2
	}
	stride := (js.IOSize + bufAlign - 1) / bufAlign * bufAlign
	mem := aligned.Bytes(int(int64(js.QueueDepth*per)*stride), bufAlign)
	slots := make([]*slot, js.QueueDepth)
	for i := range slots {
		s := &slot{js: js, index: uint64(i)}
		base := int64(i*per) * stride
		s.buf = mem[base : base+js.IOSize : base+js.IOSize]
		if per == 2 {
			s.vbuf = mem[base+stride : base+stride+js.IOSize : base+stride+js.IOSize]
		}
		s.rng = splitmix(js.Seed + uint64(i)*0x632be59bd9b4e019)
		if s.rng == 0 {
			s.rng = 1
		}
		switch {
		case js.Workload == Verify:
			s.cur = s.partition()
		default:
			s.cur = s.index % js.ios
		}
		slots[i] = s
	}
	return slots
}

// partition is the first IO index of the slot's own share of the range
// (verify): slots never touch each other's offsets, so no two IOs in
// flight overlap.
func (s *slot) partition() uint64 {
	return s.index * (s.js.ios / uint64(s.js.QueueDepth))
}

// run issues IOs until deadline or until the job stops. The clock is read
// once per IO, the monotonic clock alone (latency.Now: a wall-clock read
// would double the cost): an IO's latency runs from the previous IO's
// return (when this one starts being prepared) to its own.
func (s *slot) run(start, deadline latency.Stamp) {
	t0 := start
	for !s.js.stop.Load() {
		err := s.do()
		t1 := latency.Now()
		s.hist.Record(t1.Sub(t0))
		if err != nil {
			s.failed++
			s.js.fail(err)
		} else {
			s.completed++
		}
		t0 = t1
		if t1 >= deadline {
			break
		}
	}
	s.end = latency.Now()
}

// next returns the byte offset of the slot's next IO.
func (s *slot) next() int64 {
	js := s.js
	var idx uint64
	switch {
	case js.Workload.Random():
		idx, _ = bits.Mul64(s.rand(), js.ios) // uniform in [0, ios), no division
	case js.Workload == Verify:
		share := js.ios / uint64(js.QueueDepth)
		first := s.partition()
		idx = s.cur
		if s.cur++; s.cur == first+share {
			s.cur = first
		}
	default:
		// Slots interleave: together they walk the range in order.
		idx = s.cur
		if s.cur += uint64(js.QueueDepth); s.cur >= js.ios {
			s.cur %= js.ios
		}
	}
	return js.Offset + int64(idx)*js.IOSize
}

// rand is xorshift64: cheap, allocation-free and good enough to spread
// offsets and mix reads with writes.
func (s *slot) rand() uint64 {
	x := s.rng
	x ^= x << 13
	x ^= x >> 7
	x ^= x << 17
	s.rng = x
	return x
}

// splitmix spreads a seed over 64 bits.
func splitmix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	return x ^ x>>31
}

// do issues one IO of the job's workload.
func (s *slot) do() error {
	js := s.js
	off := s.next()
	switch js.Workload {
	case Read, RandRead:
		return js.Dev.ReadAt(s.buf, off)
	case Write, RandWrite:
		return js.Dev.WriteAt(s.buf, off, false)
	case RW, RandRW:
		if pct, _ := bits.Mul64(s.rand(), 100); pct < js.readPct {
			return js.Dev.ReadAt(s.buf, off)
		}
		return js.Dev.WriteAt(s.buf, off, false)
	case Verify:
		return s.verify(off)
	case Flush:
		return js.Dev.Flush()
	case Unmap:
		return js.discard.Discard(off, js.IOSize)
	case WriteZeroes:
		if js.zeroer != nil {
			return js.zeroer.WriteZeroes(off, js.IOSize)
		}
		// The device cannot zero without data: write zeroes, as SPDK's
		// bdev layer emulates it. s.buf is never written otherwise.
		return js.Dev.WriteAt(s.buf, off, false)
	}
	return nil
}

// verify writes a fresh pattern at off, reads it back and compares.
func (s *slot) verify(off int64) error {
	js := s.js
	s.seq++
	fillPattern(s.buf, off, s.index<<40|s.seq)
	if err := js.Dev.WriteAt(s.buf, off, false); err != nil {
		return err
	}
	if err := js.Dev.ReadAt(s.vbuf, off); err != nil {
		return err
	}
	if !bytes.Equal(s.buf, s.vbuf) {
		s.miscompares++
		return s.miscompare(off)
	}
	return nil
}

// miscompare describes a verify failure: where the first differing byte
// is. It allocates, but only on failure.
func (s *slot) miscompare(off int64) error {
	i := 0
	for i < len(s.buf) && s.buf[i] == s.vbuf[i] {
		i++
	}
	return fmt.Errorf("%s: verify at offset %d length %d: byte %d (device offset %d) read %#02x, wrote %#02x: %w",
		s.js.Name, off, len(s.buf), i, off+int64(i), s.vbuf[i], s.buf[i], ErrMiscompare)
}

// fillPattern fills p, the data of an IO at device offset off, with
// 8-byte words that each name their own device offset and the write
// (tag): data read back from the wrong place or from an older write
// differs in every word.
func fillPattern(p []byte, off int64, tag uint64) {
	for i := 0; i+8 <= len(p); i += 8 {
		binary.LittleEndian.PutUint64(p[i:], uint64(off+int64(i))^tag*0x9e3779b97f4a7c15)
	}
}
