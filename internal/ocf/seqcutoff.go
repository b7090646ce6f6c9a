package ocf

import (
	"fmt"
	"sync"
)

// Sequential cutoff (engine.md): large sequential streams bypass the cache.
// Each core tracks up to seqStreams streams, least recently used replaced.

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

// Sequential cutoff defaults and limits.
const (
	DefaultSeqCutoffThreshold      = 1 << 20 // bytes, Open CAS Linux's default
	DefaultSeqCutoffPromotionCount = 8
	MaxSeqCutoffThreshold          = 1<<32 - 1 // bytes (4 GiB less a byte: the field is 32 bits)
	MaxSeqCutoffPromotionCount     = 65535
	seqStreams                     = 128 // streams tracked per core, as OCF
)

// SeqCutoffParams configure one core's sequential cutoff.
type SeqCutoffParams struct {
	Policy SeqCutoffPolicy
	// ThresholdBytes: a stream is sequential once it has read or written
	// this many consecutive bytes. 0 means the default.
	ThresholdBytes uint32
	// PromotionCount: a stream must also have made this many requests since
	// it (re)started. 0 means the default.
	PromotionCount uint32
}

// withDefaults fills zero fields and checks ranges.
func (p SeqCutoffParams) withDefaults() (SeqCutoffParams, error) {
	if p.ThresholdBytes == 0 {
		p.ThresholdBytes = DefaultSeqCutoffThreshold
	}
	if p.PromotionCount == 0 {
		p.PromotionCount = DefaultSeqCutoffPromotionCount
	}
	switch {
	case p.Policy >= numSeqCutoffPolicies:
		return p, fmt.Errorf("sequential cutoff policy %d: %w", p.Policy, ErrInvalidConfig)
	case uint64(p.ThresholdBytes) > MaxSeqCutoffThreshold:
		return p, fmt.Errorf("sequential cutoff threshold %d bytes: %w (allowed 1..%d)", p.ThresholdBytes, ErrInvalidConfig, uint64(MaxSeqCutoffThreshold))
	case p.PromotionCount > MaxSeqCutoffPromotionCount:
		return p, fmt.Errorf("sequential cutoff promotion count %d: %w (allowed 1..%d)", p.PromotionCount, ErrInvalidConfig, MaxSeqCutoffPromotionCount)
	}
	return p, nil
}

// seqStream is one tracked stream: the next byte it would touch.
type seqStream struct {
	next   int64
	bytes  uint64
	reqs   uint32
	write  bool
	stamp  uint64 // last use, for LRU replacement
	active bool
}

// seqDetector is one core's stream table. Safe for concurrent use.
type seqDetector struct {
	mu      sync.Mutex
	params  SeqCutoffParams
	streams [seqStreams]seqStream
	clock   uint64
}

func newSeqDetector(p SeqCutoffParams) *seqDetector { return &seqDetector{params: p} }

func (d *seqDetector) set(p SeqCutoffParams) {
	d.mu.Lock()
	d.params = p
	d.mu.Unlock()
}

func (d *seqDetector) get() SeqCutoffParams {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.params
}

// bypass records the request in the stream table and reports whether it
// goes pass-through.
func (d *seqDetector) bypass(off, length int64, write, cacheFull bool) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	p := d.params
	if p.Policy == SeqCutoffNever {
		return false
	}
	d.clock++
	var s *seqStream
	victim := &d.streams[0]
	for i := range d.streams {
		st := &d.streams[i]
		if st.active && st.next == off && st.write == write {
			s = st
			break
		}
		// Replace a free slot, else the least recently used stream.
		if victim.active && (!st.active || st.stamp < victim.stamp) {
			victim = st
		}
	}
	if s == nil {
		s = victim
		*s = seqStream{active: true, write: write}
	}
	s.next = off + length
	s.bytes += uint64(length)
	s.reqs++
	s.stamp = d.clock
	sequential := s.bytes >= uint64(p.ThresholdBytes) && s.reqs >= p.PromotionCount
	return sequential && (p.Policy == SeqCutoffAlways || cacheFull)
}

// bypass reports whether a request goes pass-through as part of a
// sequential stream.
func (co *Core) bypass(off, length int64, write, cacheFull bool) bool {
	if c := co.cache; c.cutoff != nil {
		return c.cutoff.Bypass(co.id, off, length, write, cacheFull)
	}
	return co.seq.bypass(off, length, write, cacheFull)
}

// SetSeqCutoff sets the core's sequential cutoff policy and parameters
// (zero parameters: the defaults) and records them in the metadata.
func (co *Core) SetSeqCutoff(p SeqCutoffParams) error {
	p, err := p.withDefaults()
	if err != nil {
		return fmt.Errorf("%s: %w", co.info.Name, err)
	}
	co.seq.set(p)
	co.cache.mu.Lock()
	co.record.SeqCutoff, co.record.SeqThreshold, co.record.SeqPromotionCount = uint8(p.Policy), p.ThresholdBytes, p.PromotionCount
	co.cache.mu.Unlock()
	return co.cache.writeSuperblock(false)
}

// SeqCutoff returns the core's sequential cutoff parameters.
func (co *Core) SeqCutoff() SeqCutoffParams { return co.seq.get() }
