package ocf

// SetFlushBatchLines sets how many lines each batch of a flush run with
// opts writes back, so that tests can cancel between small batches.
func SetFlushBatchLines(opts *FlushOptions, n int) { opts.batchLines = n }
