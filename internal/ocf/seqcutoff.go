package ocf

import (
	"fmt"
	"math"
	"sync"

	"blockcache/internal/ocf/metadata"
)

// Sequential cutoff (engine.md), OCF's rule: a request that starts where a
// tracked stream of the same direction ended continues it, and is cut off
// once the stream's bytes so far plus its own reach the threshold. Each core
// tracks up to seqStreams streams, least recently used replaced.

// SeqCutoffPolicy says when sequential streams bypass the cache.
type SeqCutoffPolicy uint8

// The policies; the numbers are stored on disk and must never change.
const (
	SeqCutoffFull   SeqCutoffPolicy = iota // only when the cache is full (default)
	SeqCutoffAlways                        // always
	SeqCutoffNever                         // never
	numSeqCutoffPolicies
)

var seqCutoffNames = [numSeqCutoffPolicies]string{"full", "always", "never"}

func (p SeqCutoffPolicy) String() string {
	if p < numSeqCutoffPolicies {
		return seqCutoffNames[p]
	}
	return fmt.Sprintf("SeqCutoffPolicy(%d)", uint8(p))
}

// ParseSeqCutoffPolicy parses always, full or never.
func ParseSeqCutoffPolicy(s string) (SeqCutoffPolicy, error) {
	for i, n := range seqCutoffNames {
		if n == s {
			return SeqCutoffPolicy(i), nil
		}
	}
	return 0, fmt.Errorf("sequential cutoff policy %q: %w (want always, full or never)", s, ErrInvalidConfig)
}

// Sequential cutoff limits. seqStreams is OCF's count of streams tracked
// per core; the threshold is stored in 32 bits (see recordedSeqCutoff).
const (
	maxSeqCutoffThreshold      = 4 << 30 // bytes
	maxSeqCutoffPromotionCount = 65535
	seqStreams                 = 128

	// legacySeqCutoffThreshold is what a threshold of 0 in a core record
	// meant when the default was Open CAS Linux's 1 MiB. Every record
	// written since holds its value explicitly, so only an old record
	// holds 0, and it keeps the 1 MiB it had.
	legacySeqCutoffThreshold = 1 << 20
)

// SeqCutoffParams configure one core's sequential cutoff.
type SeqCutoffParams struct {
	Policy SeqCutoffPolicy
	// ThresholdBytes: a request that continues a stream is cut off when
	// the stream's bytes plus its own reach this many; 1 byte..4 GiB.
	ThresholdBytes uint64
	// PromotionCount is OCF's count of requests after which a stream moves
	// from a per-queue table to the core's table; 1..65535. blockcache
	// keeps one table per core, so it is recorded and shown but changes
	// nothing that is cut off.
	PromotionCount uint32
}

// DefaultSeqCutoffParams are a new core's: the OCF library's (full, 1 KiB,
// 8), which SPDK's OCF bdev keeps since it never sets them.
func DefaultSeqCutoffParams() SeqCutoffParams {
	return SeqCutoffParams{Policy: SeqCutoffFull, ThresholdBytes: 1024, PromotionCount: 8}
}

// Validate checks the policy and its parameters and returns a *ParamError
// for the first out of range.
func (p SeqCutoffParams) Validate() error {
	const sc = "sequential cutoff"
	return checkParams(
		paramCheck{sc, "policy", int64(p.Policy), 0, int64(numSeqCutoffPolicies) - 1, ""},
		paramCheck{sc, "threshold", int64(min(p.ThresholdBytes, math.MaxInt64)), 1, maxSeqCutoffThreshold, "bytes"},
		paramCheck{sc, "promotion_count", int64(p.PromotionCount), 1, maxSeqCutoffPromotionCount, ""},
	)
}

// recordThreshold is the threshold as a core record holds it, in 32 bits:
// 4 GiB is stored as 4 GiB less a byte, which cuts off exactly the same
// streams (IO comes in whole sectors), and read back as 4 GiB.
func recordThreshold(bytes uint64) uint32 { return uint32(min(bytes, math.MaxUint32)) }

// recordedSeqCutoff returns the parameters a core record holds, as they
// were meant when written: a 0 threshold is the old 1 MiB default, not
// today's (see legacySeqCutoffThreshold), and a 0 promotion count today's
// default.
func recordedSeqCutoff(rec metadata.CoreRecord) (SeqCutoffParams, error) {
	p := SeqCutoffParams{Policy: SeqCutoffPolicy(rec.SeqCutoff), ThresholdBytes: uint64(rec.SeqThreshold), PromotionCount: rec.SeqPromotionCount}
	switch rec.SeqThreshold {
	case 0:
		p.ThresholdBytes = legacySeqCutoffThreshold
	case math.MaxUint32:
		p.ThresholdBytes = maxSeqCutoffThreshold
	}
	if p.PromotionCount == 0 {
		p.PromotionCount = DefaultSeqCutoffParams().PromotionCount
	}
	if err := p.Validate(); err != nil {
		return p, fmt.Errorf("core record %d (%q): %w", rec.ID, rec.CoreName, err)
	}
	return p, nil
}

// seqStream is one tracked stream: the next byte it would touch and how
// many bytes it has moved.
type seqStream struct {
	next       int64
	bytes      uint64
	write      bool
	prev, succ int16 // LRU neighbours (-1: none)
}

// seqDetector is one core's stream table: seqStreams streams in an LRU list
// (head most recent), indexed by the offset each expects next, so a request
// costs O(1). Safe for concurrent use.
//
// The index is an open-addressed table with linear probing, four slots per
// stream, rather than a Go map: every request of the core passes through
// here under mu, and the map's hashing and growth checks made that critical
// section the one contended lock of parallel write hits.
type seqDetector struct {
	mu         sync.Mutex
	params     SeqCutoffParams
	streams    [seqStreams]seqStream
	index      [seqIndexSlots]int16 // 1 + the stream expecting (next, write); 0: empty
	head, tail int16
}

const (
	seqIndexBits  = 9
	seqIndexSlots = 1 << seqIndexBits // 4 per stream
)

func newSeqDetector(p SeqCutoffParams) *seqDetector {
	d := &seqDetector{params: p, head: 0, tail: seqStreams - 1}
	for i := range d.streams {
		d.streams[i] = seqStream{next: -1, prev: int16(i - 1), succ: int16(i + 1)}
	}
	d.streams[seqStreams-1].succ = -1
	return d
}

// home is the index slot where the search for (next, write) starts.
func seqHome(next int64, write bool) int {
	h := uint64(next) << 1
	if write {
		h |= 1
	}
	return int(h * 0x9E3779B97F4A7C15 >> (64 - seqIndexBits))
}

// find returns the slot of the stream expecting (next, write) and the
// stream, or the empty slot where it would go and -1.
func (d *seqDetector) find(next int64, write bool) (slot int, stream int16) {
	for slot = seqHome(next, write); ; slot = (slot + 1) & (seqIndexSlots - 1) {
		e := d.index[slot]
		if e == 0 {
			return slot, -1
		}
		if s := &d.streams[e-1]; s.next == next && s.write == write {
			return slot, e - 1
		}
	}
}

// unindex empties slot and shifts back the entries after it that would
// otherwise no longer be found (linear probing's deletion, no tombstones).
func (d *seqDetector) unindex(slot int) {
	const mask = seqIndexSlots - 1
	d.index[slot] = 0
	for j := (slot + 1) & mask; d.index[j] != 0; j = (j + 1) & mask {
		s := &d.streams[d.index[j]-1]
		home := seqHome(s.next, s.write)
		if dh := (home - slot) & mask; dh != 0 && dh <= (j-slot)&mask {
			continue // still reachable from its home
		}
		d.index[slot], d.index[j] = d.index[j], 0
		slot = j
	}
}

// reindex records that stream i now expects (next, write). A stream that
// expected the same had two streams meet; it is forgotten.
func (d *seqDetector) reindex(i int16, next int64, write bool) {
	slot, other := d.find(next, write)
	if other >= 0 {
		d.streams[other].next = -1
	}
	d.index[slot] = i + 1
	d.streams[i].next, d.streams[i].write = next, write
}

func (d *seqDetector) get() SeqCutoffParams {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.params
}

// toFront makes stream i the most recently used.
func (d *seqDetector) toFront(i int16) {
	if d.head == i {
		return
	}
	s := &d.streams[i]
	d.streams[s.prev].succ = s.succ
	if s.succ >= 0 {
		d.streams[s.succ].prev = s.prev
	} else {
		d.tail = s.prev
	}
	s.prev, s.succ = -1, d.head
	d.streams[d.head].prev = i
	d.head = i
}

// observe records the request in the stream table and reports whether it
// continues a stream that, with it, reaches the threshold, with the policy
// to apply. A request that starts no known stream starts one of its own
// bytes and is never sequential itself.
func (d *seqDetector) observe(off, length int64, write bool) (sequential bool, policy SeqCutoffPolicy) {
	d.mu.Lock()
	p := d.params
	if p.Policy == SeqCutoffNever {
		d.mu.Unlock()
		return false, p.Policy
	}
	slot, i := d.find(off, write)
	if i >= 0 {
		d.unindex(slot)
		sequential = d.streams[i].bytes+uint64(length) >= uint64(p.ThresholdBytes)
	} else {
		// A new stream replaces the least recently used one.
		i = d.tail
		if old := &d.streams[i]; old.next >= 0 {
			oldSlot, _ := d.find(old.next, old.write)
			d.unindex(oldSlot)
		}
		d.streams[i].bytes = 0
	}
	d.reindex(i, off+length, write)
	d.streams[i].bytes += uint64(length)
	d.toFront(i)
	d.mu.Unlock()
	return sequential, p.Policy
}

// bypass reports whether request r goes pass-through as part of a
// sequential stream. The cache's fullness is found only when the policy
// needs it (r.full may take Cache.mu).
func (co *Core) bypass(r *request, write bool) bool {
	if c := co.cache; c.cutoff != nil {
		return c.cutoff.Bypass(co.id, r.off, r.len, write, r.full())
	}
	sequential, policy := co.seq.observe(r.off, r.len, write)
	return sequential && (policy == SeqCutoffAlways || policy == SeqCutoffFull && r.full())
}

// SetSeqCutoff validates p, sets the core's sequential cutoff to it and
// records it in the metadata. If the metadata cannot be written, the old
// parameters are put back.
func (co *Core) SetSeqCutoff(p SeqCutoffParams) error {
	if err := p.Validate(); err != nil {
		return fmt.Errorf("%s: %w", co.info.Name, err)
	}
	var old SeqCutoffParams
	if err := co.cache.changeRecorded(func() { old = co.swapSeqCutoff(p) }, func() { co.swapSeqCutoff(old) }); err != nil {
		return fmt.Errorf("set sequential cutoff of %s: %w", co.info.Name, err)
	}
	return nil
}

// swapSeqCutoff puts p in force and in the core's record, and returns the
// parameters it replaced.
func (co *Core) swapSeqCutoff(p SeqCutoffParams) SeqCutoffParams {
	c := co.cache
	c.mu.Lock()
	defer c.mu.Unlock()
	d := co.seq
	d.mu.Lock()
	defer d.mu.Unlock()
	old := d.params
	d.params = p
	co.record.SeqCutoff, co.record.SeqThreshold, co.record.SeqPromotionCount = uint8(p.Policy), recordThreshold(p.ThresholdBytes), p.PromotionCount
	return old
}

// SeqCutoff returns the core's sequential cutoff parameters.
func (co *Core) SeqCutoff() SeqCutoffParams { return co.seq.get() }
