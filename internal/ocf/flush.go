package ocf

import (
	"context"
	"errors"
	"fmt"
)

// The "flush cache" management operation: write back what is dirty in
// batches (cleanBatch) until as many lines as were dirty at the start have
// been written back. A flush is bounded by that count, so writers that keep
// dirtying lines cannot keep it running for ever; with the write-through
// hold (mode.go) they make nothing new dirty, and the flush leaves no dirty
// line of its cores behind.

// FlushOptions tune Cache.Flush. The zero value is SPDK's flush.
type FlushOptions struct {
	// WriteThrough makes writes to the flushed cores go write-through while
	// the flush runs (see HoldWriteThrough): no new dirty data appears, so
	// when the flush succeeds its cores have no dirty line left. Without
	// it writes keep the cache mode, and lines they dirty meanwhile may
	// stay dirty.
	WriteThrough bool
	// Progress, when not nil, is called with the lines written back so
	// far and the number that were dirty when the flush started (never
	// less than done): once before the first batch when some are dirty,
	// then after each batch.
	Progress func(done, total int)

	// batchLines is how many lines a batch writes back: flushBatchLines
	// when 0 (tests set it, to cancel between small batches).
	batchLines int
}

// Flush writes back every dirty line of core co, or of every attached core
// when co is nil, and flushes the cores. It stops once it has written back
// as many lines as were dirty when it started, or found no more.
//
// Cancelling ctx stops it before its next batch (a batch in flight, at
// most 128 lines, finishes): the lines written back so far are clean and
// recorded so, the rest stay dirty, and the error wraps ErrFlushCancelled.
// Other management operations wait for a running flush. Its errors name
// the lines and devices that failed, not the flush: the caller knows it
// asked for one.
func (c *Cache) Flush(ctx context.Context, co *Core, opts FlushOptions) error {
	c.mgmt.Lock()
	defer c.mgmt.Unlock()
	if opts.WriteThrough {
		defer c.HoldWriteThrough(co)()
	}
	return c.flush(ctx, co, opts)
}

// FlushDirty is Flush without cancellation or the write-through hold;
// progress is FlushOptions.Progress.
func (c *Cache) FlushDirty(co *Core, progress func(done, total int)) error {
	return c.Flush(context.Background(), co, FlushOptions{Progress: progress})
}

// flushDirty is FlushDirty with mgmt held.
func (c *Cache) flushDirty(co *Core, progress func(done, total int)) error {
	return c.flush(context.Background(), co, FlushOptions{Progress: progress})
}

// flush is Flush with mgmt held.
func (c *Cache) flush(ctx context.Context, co *Core, opts FlushOptions) error {
	batch := opts.batchLines
	if batch <= 0 {
		batch = flushBatchLines
	}
	c.mu.Lock()
	total := c.mu.lists[listDirty].n
	if co != nil {
		total = co.dirtyLines
	}
	c.mu.Unlock()
	if opts.Progress != nil && total > 0 {
		opts.Progress(0, total)
	}
	done := 0
	for {
		if ctx.Err() != nil {
			err := fmt.Errorf("%w after writing back %d of %d dirty lines", ErrFlushCancelled, done, total)
			// The lines written back can be reused once recorded clean.
			if serr := c.syncMetadata(false); serr != nil {
				err = errors.Join(err, serr)
			}
			return err
		}
		n, err := c.cleanBatch(co, batch, false)
		if err != nil {
			return err
		}
		done += n
		if n == 0 || done >= total {
			// Record the lines as clean, so they can be reused.
			if err := c.syncMetadata(false); err != nil {
				return err
			}
			if opts.Progress != nil && n > 0 {
				opts.Progress(done, max(total, done))
			}
			return nil
		}
		if opts.Progress != nil {
			opts.Progress(done, max(total, done))
		}
	}
}
