package latency

import "time"

// Stamp is a reading of the monotonic clock, in nanoseconds since the
// process started. Reading it costs one monotonic clock read, half of
// time.Now, which reads the wall clock too.
type Stamp int64

// origin is the zero of Stamp. It is set once, at start-up, and never
// written again.
var origin = time.Now()

// Now returns the current Stamp.
func Now() Stamp { return Stamp(time.Since(origin)) }

// Sub returns the duration from start to s.
func (s Stamp) Sub(start Stamp) time.Duration { return time.Duration(s - start) }
