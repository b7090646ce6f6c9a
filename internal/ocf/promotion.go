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

// PromotionParams configure a cache's promotion policy.
type PromotionParams struct {
	Kind PromotionKind
	// InsertionThreshold: nhit inserts a line on this access; 2..1000.
	InsertionThreshold uint32
	// TriggerThreshold: nhit applies once occupancy reaches this percent
	// (below it every miss is inserted); 0..100.
	TriggerThreshold uint32
}

// DefaultPromotionParams are a new cache's, OCF's: always, and for nhit
// an insertion threshold of 3 and a trigger threshold of 80%.
func DefaultPromotionParams() PromotionParams {
	return PromotionParams{Kind: PromoteAlwaysKind, InsertionThreshold: 3, TriggerThreshold: 80}
}

// Validate checks the policy and its parameters against OCF's ranges and
// returns a *ParamError for the first out of range.
func (p PromotionParams) Validate() error {
	return checkParams(
		paramCheck{"promotion", "policy", int64(p.Kind), 0, int64(numPromotionKinds) - 1, ""},
		paramCheck{"promotion nhit", "insertion_threshold", int64(p.InsertionThreshold), 2, 1000, ""},
		paramCheck{"promotion nhit", "trigger_threshold", int64(p.TriggerThreshold), 0, 100, "%"},
	)
}

// recordedPromotion decodes the promotion the superblock records; an
// insertion threshold of 0, which no release wrote but the slot's zero
// value, loads as the default.
func recordedPromotion(kind uint8, insertion, trigger uint32) PromotionParams {
	p := PromotionParams{Kind: PromotionKind(kind), InsertionThreshold: insertion, TriggerThreshold: trigger}
	if insertion == 0 {
		p.InsertionThreshold = DefaultPromotionParams().InsertionThreshold
	}
	return p
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

// NewNHit returns an nhit policy with p's thresholds and a table of slots
// entries.
func NewNHit(p PromotionParams, slots int) (*NHit, error) {
	if err := p.Validate(); err != nil {
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

// SetPromotion validates p, changes the cache's promotion policy to it and
// records it in the metadata. If the metadata cannot be written, the old
// policy is put back, with the counts it had.
func (c *Cache) SetPromotion(p PromotionParams) error {
	pol, err := c.newPromotionPolicy(p)
	if err != nil {
		return err
	}
	var oldPol PromotionPolicy
	var old PromotionParams
	if err := c.changeRecorded(func() { oldPol, old = c.prom.swap(pol, p) }, func() { c.prom.swap(oldPol, old) }); err != nil {
		return fmt.Errorf("set promotion policy: %w", err)
	}
	return nil
}

// swap puts pol with its parameters p in force and returns those it
// replaced.
func (h *promotionHolder) swap(pol PromotionPolicy, p PromotionParams) (PromotionPolicy, PromotionParams) {
	h.mu.Lock()
	defer h.mu.Unlock()
	oldPol, old := h.policy, h.params
	h.policy, h.params = pol, p
	return oldPol, old
}

// newPromotionPolicy validates p and returns the built-in policy it
// chooses.
func (c *Cache) newPromotionPolicy(p PromotionParams) (PromotionPolicy, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if p.Kind == PromoteNHitKind {
		return NewNHit(p, c.layout.numLines)
	}
	return PromoteAlways{}, nil
}

// Promotion returns the cache's promotion parameters.
func (c *Cache) Promotion() PromotionParams {
	c.prom.mu.RLock()
	defer c.prom.mu.RUnlock()
	return c.prom.params
}
