package latency

import "time"

// NumShards is the number of shards of a Sharded histogram.
const NumShards = 16

// Sharded is a Histogram split in NumShards shards, each on CPU cache lines
// of its own, for paths so short that CPUs recording into one shared
// histogram would slow each other down (a cache hit served from memory).
// The caller picks the shard, e.g. from the address of the data, so that
// CPUs working on different data record into different shards. The zero
// value is ready; it is safe for concurrent use.
type Sharded struct {
	shards [NumShards]paddedHistogram
}

// paddedHistogram keeps a shard's last words and the next shard's first off
// a common 64-byte line: a Histogram is 232 bytes, padded to 320.
type paddedHistogram struct {
	Histogram
	_ [320 - 232]byte
}

// Since records, in shard shard (any number: it is taken modulo
// NumShards), the time elapsed since start.
func (s *Sharded) Since(shard uint64, start Stamp) {
	s.shards[shard%NumShards].Record(Now().Sub(start))
}

// Record records d in shard shard.
func (s *Sharded) Record(shard uint64, d time.Duration) {
	s.shards[shard%NumShards].Record(d)
}

// Snapshot returns the counts of every shard together.
func (s *Sharded) Snapshot() Snapshot {
	var out Snapshot
	for i := range s.shards {
		out = out.Add(s.shards[i].Snapshot())
	}
	return out
}
