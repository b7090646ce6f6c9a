package bdev

// LossReporter is implemented by devices that can learn after the fact that
// writes they acknowledged were lost before they became durable: an NBD
// client whose server's write cache went with a lost session. As with
// Linux's errseq, a writer takes a mark before its writes and flushes
// against it, so a loss reported to one writer is not hidden from another;
// Flush reports each loss to one caller only.
type LossReporter interface {
	// WriteBackMark returns the losses recorded so far. Take it before the
	// writes a FlushSince must cover.
	WriteBackMark() uint64
	// FlushSince is Flush, and fails wrapping ErrWritesLost if a loss was
	// recorded after mark was taken.
	FlushSince(mark uint64) error
}

// WriteBackMark returns d's mark for FlushSince: 0 unless d is a
// LossReporter.
func WriteBackMark(d Device) uint64 {
	if r, ok := d.(LossReporter); ok {
		return r.WriteBackMark()
	}
	return 0
}

// FlushSince flushes d; a LossReporter also fails if writes it acknowledged
// were lost since mark was taken.
func FlushSince(d Device, mark uint64) error {
	if r, ok := d.(LossReporter); ok {
		return r.FlushSince(mark)
	}
	return d.Flush()
}
