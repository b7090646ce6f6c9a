package latency

// haveTSC: every amd64 CPU has the time-stamp counter.
const haveTSC = true

// readTSC returns the time-stamp counter (RDTSC, without a fence).
func readTSC() uint64
