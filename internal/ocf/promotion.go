package ocf

import (
	"fmt"
	"sync"
)

// Promotion (engine.md): which misses are inserted.

// PromotionKind names a promotion policy.
type PromotionKind uint8

// The policies; the numbers are stored on disk and must never change.
const (
	PromoteAlwaysKind PromotionKind = iota // insert every miss (default)
	PromoteNHitKind                        // insert a line on its N-th access
	numPromotionKinds
)

var promotionNames = [numPromotionKinds]string{"always", "nhit"}

func (k PromotionKind) String() string {
	if k < numPromotionKinds {
		return promotionNames[k]
	}
	return fmt.Sprintf("PromotionKind(%d)", uint8(k))
}

// ParsePromotionKind parses always or nhit.
func ParsePromotionKind(s string) (PromotionKind, error) {
	for i, n := range promotionNames {
		if n == s {
			return PromotionKind(i), nil
		}
	}
	return 0, fmt.Errorf("promotion policy %q: %w (want always or nhit)", s, ErrInvalidConfig)
}

// nhit defaults and ranges, as OCF's.
const (
	DefaultNHitInsertionThreshold = 3
	MinNHitInsertionThreshold     = 2
	MaxNHitInsertionThreshold     = 1000
	DefaultNHitTriggerThreshold   = 80 // percent occupancy
	MaxNHitTriggerThreshold       = 100
)

// PromotionParams configure a cache's promotion policy.
type PromotionParams struct {
	Kind PromotionKind
	// InsertionThreshold: nhit inserts a line on this access (2..1000; 0:
	// default 3).
	InsertionThreshold uint32
	// TriggerThreshold: nhit applies once occupancy reaches this percent
	// (0..100; below it every miss is inserted). Default 80; set
	// TriggerSet to use 0.
	TriggerThreshold uint32
	TriggerSet       bool
}

func (p PromotionParams) withDefaults() (PromotionParams, error) {
	if p.InsertionThreshold == 0 {
		p.InsertionThreshold = DefaultNHitInsertionThreshold
	}
	if !p.TriggerSet && p.TriggerThreshold == 0 {
		p.TriggerThreshold = DefaultNHitTriggerThreshold
	}
	p.TriggerSet = true
	switch {
	case p.Kind >= numPromotionKinds:
		return p, fmt.Errorf("promotion policy %d: %w", p.Kind, ErrInvalidConfig)
	case p.InsertionThreshold < MinNHitInsertionThreshold || p.InsertionThreshold > MaxNHitInsertionThreshold:
		return p, fmt.Errorf("nhit insertion_threshold %d: %w (allowed %d..%d)", p.InsertionThreshold, ErrInvalidConfig, MinNHitInsertionThreshold, MaxNHitInsertionThreshold)
	case p.TriggerThreshold > MaxNHitTriggerThreshold:
		return p, fmt.Errorf("nhit trigger_threshold %d: %w (allowed 0..%d)", p.TriggerThreshold, ErrInvalidConfig, MaxNHitTriggerThreshold)
	}
	return p, nil
}

// NHit is the nhit promotion policy: a line is inserted on its
// InsertionThreshold-th access once the cache is TriggerThreshold percent
// full. Accesses are counted in a fixed-size, direct-mapped table (a slot
// per cache line, at least 1024): a colliding line takes the slot over, so
// memory stays bounded and old counts age out. Safe for concurrent use.
type NHit struct {
	insertion, trigger uint32

	mu    sync.Mutex
	slots []nhitSlot
}

type nhitSlot struct {
	key   uint64 // core<<48 | core line, +1 so that 0 is empty
	count uint32
}

// NewNHit returns an nhit policy with a table of slots entries.
func NewNHit(p PromotionParams, slots int) (*NHit, error) {
	p, err := p.withDefaults()
	if err != nil {
		return nil, err
	}
	return &NHit{insertion: p.InsertionThreshold, trigger: p.TriggerThreshold, slots: make([]nhitSlot, max(slots, 1024))}, nil
}

// Promote implements PromotionPolicy.
func (n *NHit) Promote(core CoreID, coreLine uint64, occupancyPct int) bool {
	key := (uint64(core)<<48 | coreLine) + 1
	n.mu.Lock()
	defer n.mu.Unlock()
	s := &n.slots[(key*0x9E3779B97F4A7C15)>>32%uint64(len(n.slots))]
	if s.key != key {
		s.key, s.count = key, 0
	}
	s.count++
	if uint32(occupancyPct) < n.trigger {
		return true
	}
	if s.count >= n.insertion {
		s.key, s.count = 0, 0 // inserted: stop tracking it
		return true
	}
	return false
}

// promotionHolder lets the policy change at run time.
type promotionHolder struct {
	mu     sync.RWMutex
	policy PromotionPolicy
	params PromotionParams
}

func (h *promotionHolder) get() PromotionPolicy {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.policy
}

// SetPromotion changes the cache's promotion policy (PromotionParams'
// zero values are the defaults) and records it in the metadata.
func (c *Cache) SetPromotion(p PromotionParams) error {
	p, err := p.withDefaults()
	if err != nil {
		return err
	}
	var pol PromotionPolicy = PromoteAlways{}
	if p.Kind == PromoteNHitKind {
		if pol, err = NewNHit(p, c.layout.numLines); err != nil {
			return err
		}
	}
	c.prom.mu.Lock()
	c.prom.policy, c.prom.params = pol, p
	c.prom.mu.Unlock()
	return c.writeSuperblock(false)
}

// Promotion returns the cache's promotion parameters.
func (c *Cache) Promotion() PromotionParams {
	c.prom.mu.RLock()
	defer c.prom.mu.RUnlock()
	return c.prom.params
}
