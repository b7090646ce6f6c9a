//go:build amd64 && !race

package malloc

// optimisticReads enables readChunk's lock-free copy. It needs loads that
// are not reordered with later loads, so that the copy is done before seq
// is read again: x86-64 (TSO) gives that with plain loads, and Go's atomic
// loads are plain loads there. On other architectures an atomic load does
// not order the loads before it, so reads take the lock. Under the race
// detector they take it too: the detector would rightly report the racy copy
// that the sequence check then discards.
const optimisticReads = true
