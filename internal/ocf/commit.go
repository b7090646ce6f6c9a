package ocf

import (
	"fmt"
	"sync"
)

// Group commit of dirty state (durability.md, "When it is written").
//
// By default a write whose own change is urgent (it made sectors dirty, or
// dropped dirty sectors whose durable entry still claims them) returns only
// once the entry sector recording the change is on the cache device, after
// the data it describes. Each urgent change takes a number (urgentSeq) when
// it is recorded; a sync round takes every marked sector together with the
// number of the newest change, and once the sectors are written it
// publishes that number as durable. A writer waits until durable reaches
// its own number:
//
//   - a round in flight may have taken its change: it waits for that round
//     and looks again, and starts none of its own meanwhile;
//   - only when no round is in flight does it start one, which takes its
//     change and those of every writer that arrived meanwhile.
//
// So concurrent writers share one entry-sector write and its two flushes,
// and no writer holds a lock across device IO but the round's own writer,
// holding meta.sync as every metadata write does.

// commitState is where writers meet to share sync rounds.
type commitState struct {
	mu sync.Mutex
	// ended is signalled (on mu) whenever a round ends.
	ended sync.Cond
	// running is set while a writer runs a round.
	running bool
	// rounds counts the rounds ended; taken and err are the last one's:
	// the newest change it took, and how it failed.
	rounds uint64
	taken  uint64
	err    error
}

// commit returns once every urgent change numbered up to seq is durable,
// or with the error of a round that took the change and failed.
func (c *Cache) commit(seq uint64) error {
	if c.meta.durable.Load() >= seq {
		return nil
	}
	cm := &c.meta.commit
	cm.mu.Lock()
	defer cm.mu.Unlock()
	for c.meta.durable.Load() < seq {
		if cm.running {
			// It may have taken seq: wait for it and look again.
			for n := cm.rounds; n == cm.rounds; {
				cm.ended.Wait()
			}
			if cm.err != nil && cm.taken >= seq && c.meta.durable.Load() < seq {
				return cm.err
			}
			continue
		}
		cm.running = true
		cm.mu.Unlock()
		taken, err := c.syncRound(false, false)
		cm.mu.Lock()
		cm.running = false
		cm.rounds++
		cm.taken, cm.err = taken, err
		cm.ended.Broadcast()
		if err != nil {
			return err
		}
	}
	return nil
}

// commitWrite makes request r, whose IO and mask changes are done and whose
// stripes are released, as durable as the cache promises before it is
// acknowledged: by default its own urgent change (r.commitSeq); with fua,
// every urgent change so far (the metadata mapping its data may have been
// changed by an earlier write with volatile dirty metadata). op names the
// request in the error.
func (c *Cache) commitWrite(r *request, op string, fua bool) error {
	seq := r.commitSeq
	if c.meta.volatileDirty {
		seq = 0
	}
	if fua {
		seq = c.meta.urgentSeq.Load()
	}
	if seq == 0 || c.meta.durable.Load() >= seq {
		return nil
	}
	if err := c.commit(seq); err != nil {
		r.co.cacheError(false)
		what := "dirty state"
		if fua {
			what = "FUA"
		}
		return fmt.Errorf("%s %s at %d: %s: %w", r.co.info.Name, op, r.off, what, err)
	}
	return nil
}
