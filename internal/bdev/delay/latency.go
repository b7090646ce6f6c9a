package delay

import (
	"fmt"
	"time"
)

// Latencies are the delays added to completed IO, as bdev_delay_create's
// avg_read_latency, p99_read_latency, avg_write_latency and
// p99_write_latency (which SPDK takes in microseconds).
type Latencies struct {
	AvgRead, P99Read, AvgWrite, P99Write time.Duration
}

// validate checks what bdev_delay_create checks: no negative latency and no
// p99 latency below its average.
func (l Latencies) validate() error {
	for k, v := range l.byKind() {
		if v < 0 {
			return fmt.Errorf("%v latency %v is negative", LatencyKind(k), v)
		}
	}
	if l.P99Read < l.AvgRead || l.P99Write < l.AvgWrite {
		return fmt.Errorf("p99 latency below average latency (read %v < %v or write %v < %v)", l.P99Read, l.AvgRead, l.P99Write, l.AvgWrite)
	}
	return nil
}

func (l Latencies) byKind() [numKinds]time.Duration {
	return [numKinds]time.Duration{AvgRead: l.AvgRead, P99Read: l.P99Read, AvgWrite: l.AvgWrite, P99Write: l.P99Write}
}

// LatencyKind names one of the four latencies, as the latency_type of SPDK's
// bdev_delay_update_latency.
type LatencyKind uint8

// The latency kinds.
const (
	AvgRead LatencyKind = iota
	P99Read
	AvgWrite
	P99Write
	numKinds
)

var kindNames = [numKinds]string{AvgRead: "avg_read", P99Read: "p99_read", AvgWrite: "avg_write", P99Write: "p99_write"}

// String returns SPDK's name for k: "avg_read", "p99_read", "avg_write" or
// "p99_write".
func (k LatencyKind) String() string {
	if k < numKinds {
		return kindNames[k]
	}
	return fmt.Sprintf("LatencyKind(%d)", uint8(k))
}

// ParseLatencyKind parses SPDK's name of a latency kind.
func ParseLatencyKind(s string) (LatencyKind, error) {
	for k, name := range kindNames {
		if s == name {
			return LatencyKind(k), nil
		}
	}
	return 0, fmt.Errorf("unknown latency type %q (want avg_read, p99_read, avg_write or p99_write)", s)
}
