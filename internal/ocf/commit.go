package ocf

import "fmt"

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

// commitRound is one sync round started by a writer. taken and err are
// set before done is closed.
type commitRound struct {
	done  chan struct{}
	taken uint64 // the newest change the round took
	err   error
}

// commit returns once every urgent change numbered up to seq is durable,
// or with the error of the round that took the change and failed.
func (c *Cache) commit(seq uint64) error {
	cm := &c.meta.commit
	for c.meta.durable.Load() < seq {
		cm.Lock()
		if c.meta.durable.Load() >= seq {
			cm.Unlock()
			return nil
		}
		if r := cm.round; r != nil {
			cm.Unlock()
			<-r.done
			if r.err != nil && r.taken >= seq {
				return r.err
			}
			continue
		}
		r := &commitRound{done: make(chan struct{})}
		cm.round = r
		cm.Unlock()
		r.taken, r.err = c.syncRound(false, false)
		cm.Lock()
		cm.round = nil
		cm.Unlock()
		close(r.done)
		if r.err != nil {
			return r.err
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
