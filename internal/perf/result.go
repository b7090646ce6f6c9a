package perf

import "time"

// Result is what one job did.
type Result struct {
	Job         string
	Core        int
	Workload    Workload
	ReadPercent int // RW and RandRW only
	QueueDepth  int // as run (verify may lower it)
	IOSize      int64
	// VerifyStart and VerifyLength are the range verify covered, in
	// IO-sized units, as bdevperf reports its LBA range.
	VerifyStart, VerifyLength uint64
	// ContinueOnFailure is the job's: whether a failure ended it.
	ContinueOnFailure bool

	// Runtime is from the start of the run to the job's last IO's return.
	Runtime time.Duration
	// Completed counts IOs that succeeded; Failed those that returned an
	// error or, with verify, read back other data (Miscompares of them).
	Completed, Failed, Miscompares uint64
	// Latency holds every IO's latency, failed ones too.
	Latency *Histogram
	// Err is the job's first failure, nil if none.
	Err error
	// Terminated is set when the run was cancelled before its time.
	Terminated bool
	// Extra holds figures the caller adds (the CLI: a cache volume's hit
	// ratios over the run); WriteJSON reports them under "extra".
	Extra map[string]float64
}

// IOPS is the rate of successful IOs.
func (r *Result) IOPS() float64 { return perSecond(r.Completed, r.Runtime) }

// MiBps is the rate of successful IO in MiB per second.
func (r *Result) MiBps() float64 { return r.IOPS() * float64(r.IOSize) / (1 << 20) }

// FailPerSec is the rate of failed IOs.
func (r *Result) FailPerSec() float64 { return perSecond(r.Failed, r.Runtime) }

// Status is bdevperf's word for how the job ended: "terminated" when the
// run was cancelled, "failed" when a failure stopped it, else "finished".
func (r *Result) Status() string {
	switch {
	case r.Terminated:
		return "terminated"
	case r.Failed > 0 && !r.ContinueOnFailure:
		return "failed"
	}
	return "finished"
}

func perSecond(n uint64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

// Total sums results as bdevperf's Total line does: rates add up, the
// average latency is over every IO of every job, min and max are the
// extremes.
type Total struct {
	IOPS, MiBps, FailPerSec float64
	Latency                 *Histogram
}

// Sum totals results.
func Sum(results []*Result) Total {
	t := Total{Latency: new(Histogram)}
	for _, r := range results {
		t.IOPS += r.IOPS()
		t.MiBps += r.MiBps()
		t.FailPerSec += r.FailPerSec()
		t.Latency.Merge(r.Latency)
	}
	return t
}
