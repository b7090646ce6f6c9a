package perf

import (
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"strings"
	"time"
)

// latencyCutoffs are the percentiles the latency summary lists, bdevperf's.
var latencyCutoffs = []float64{0.01, 0.10, 0.25, 0.50, 0.75, 0.90, 0.95, 0.98, 0.99, 0.995, 0.999, 0.9999, 0.99999, 0.999999, 0.9999999}

// CoreMask formats the mask of one CPU as bdevperf prints it: "0x1" for
// CPU 0, "0x4" for CPU 2.
func CoreMask(core int) string {
	return "0x" + new(big.Int).Lsh(big.NewInt(1), uint(core)).Text(16)
}

// us converts a latency to the microseconds bdevperf prints.
func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// WriteText writes results in bdevperf's layout: a header, per job its
// "Job:" line and a row of runtime, IOPS, MiB/s, Fail/s, TO/s and
// average, min and max latency in microseconds, then a Total row. With
// summary it adds bdevperf's latency summary (its -l): percentiles per
// job. The TO/s column is always 0: IOs here have no timeout.
func WriteText(w io.Writer, results []*Result, summary bool) error {
	var b strings.Builder
	fmt.Fprintf(&b, "\n%*s\n", 107, "Latency(us)")
	fmt.Fprintf(&b, " %-*s: %10s %10s %10s %10s %8s %10s %10s %10s\n",
		28, "Device Information", "runtime(s)", "IOPS", "MiB/s", "Fail/s", "TO/s", "Average", "min", "max")
	for _, r := range results {
		if r.Workload.Mixed() {
			fmt.Fprintf(&b, " Job: %s (Core Mask %s, workload: %s, percentage: %d, depth: %d, IO size: %d)\n",
				r.Job, CoreMask(r.Core), r.Workload, r.ReadPercent, r.QueueDepth, r.IOSize)
		} else {
			fmt.Fprintf(&b, " Job: %s (Core Mask %s, workload: %s, depth: %d, IO size: %d)\n",
				r.Job, CoreMask(r.Core), r.Workload, r.QueueDepth, r.IOSize)
		}
		if r.Failed > 0 && !r.ContinueOnFailure {
			fmt.Fprintf(&b, " Job: %s ended in about %.2f seconds with error\n", r.Job, r.Runtime.Seconds())
		}
		if r.Workload == Verify {
			fmt.Fprintf(&b, "\t Verification LBA range: start 0x%x length 0x%x\n", r.VerifyStart, r.VerifyLength)
		}
		fmt.Fprintf(&b, "\t %-20s: %10.2f %10.2f %10.2f %10.2f %8.2f %10.2f %10.2f %10.2f\n",
			r.Job, r.Runtime.Seconds(), r.IOPS(), r.MiBps(), r.FailPerSec(), 0.0,
			us(r.Latency.Mean()), us(r.Latency.Min()), us(r.Latency.Max()))
	}
	t := Sum(results)
	fmt.Fprintf(&b, " %s\n", strings.Repeat("=", 115))
	fmt.Fprintf(&b, " %-28s: %10s %10.2f %10.2f %10.2f %8.2f %10.2f %10.2f %10.2f\n",
		"Total", "", t.IOPS, t.MiBps, t.FailPerSec, 0.0,
		us(t.Latency.Mean()), us(t.Latency.Min()), us(t.Latency.Max()))
	if summary && t.Latency.Count() > 0 {
		fmt.Fprintf(&b, "\n Latency summary\n")
		for _, r := range results {
			fmt.Fprintf(&b, " =============================================\n")
			fmt.Fprintf(&b, " Job: %s (Core Mask %s)\n", r.Job, CoreMask(r.Core))
			if r.Latency.Count() > 0 {
				for _, q := range latencyCutoffs {
					fmt.Fprintf(&b, "%9.5f%% : %9.3fus\n", q*100, us(r.Latency.Percentile(q)))
				}
			}
			b.WriteString("\n")
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// jsonResult is one job in the JSON report: the members of bdevperf's
// perform_tests result, in its order, then ours (percentiles, miscompares,
// the first error, the caller's extra figures).
type jsonResult struct {
	Job          string             `json:"job"`
	CoreMask     string             `json:"core_mask"`
	Workload     string             `json:"workload"`
	Percentage   *int               `json:"percentage,omitempty"`
	Status       string             `json:"status"`
	VerifyRange  *verifyRange       `json:"verify_range,omitempty"`
	QueueDepth   int                `json:"queue_depth"`
	IOSize       int64              `json:"io_size"`
	Runtime      float64            `json:"runtime"`
	IOPS         float64            `json:"iops"`
	MiBps        float64            `json:"mibps"`
	IOFailed     uint64             `json:"io_failed"`
	IOTimeout    uint64             `json:"io_timeout"`
	AvgLatencyUs float64            `json:"avg_latency_us"`
	MinLatencyUs float64            `json:"min_latency_us"`
	MaxLatencyUs float64            `json:"max_latency_us"`
	P50LatencyUs float64            `json:"p50_latency_us"`
	P99LatencyUs float64            `json:"p99_latency_us"`
	IOCompleted  uint64             `json:"io_completed"`
	Miscompares  uint64             `json:"miscompares,omitempty"`
	Error        string             `json:"error,omitempty"`
	Extra        map[string]float64 `json:"extra,omitempty"`
}

type verifyRange struct {
	Start  uint64 `json:"start"`
	Length uint64 `json:"length"`
}

// jsonReport is bdevperf's perform_tests result: the jobs and how many
// distinct CPUs they ran on.
type jsonReport struct {
	Results   []jsonResult `json:"results"`
	CoreCount int          `json:"core_count"`
}

// WriteJSON writes results as bdevperf's perform_tests RPC returns them,
// with p50/p99 latency, the completed IO count, miscompares, the first
// error and the caller's Extra added to each job.
func WriteJSON(w io.Writer, results []*Result) error {
	rep := jsonReport{Results: make([]jsonResult, 0, len(results))}
	cores := map[int]bool{}
	for _, r := range results {
		cores[r.Core] = true
		jr := jsonResult{
			Job:          r.Job,
			CoreMask:     CoreMask(r.Core),
			Workload:     r.Workload.String(),
			Status:       r.Status(),
			QueueDepth:   r.QueueDepth,
			IOSize:       r.IOSize,
			Runtime:      r.Runtime.Seconds(),
			IOPS:         r.IOPS(),
			MiBps:        r.MiBps(),
			IOFailed:     r.Failed,
			AvgLatencyUs: us(r.Latency.Mean()),
			MinLatencyUs: us(r.Latency.Min()),
			MaxLatencyUs: us(r.Latency.Max()),
			P50LatencyUs: us(r.Latency.Percentile(0.50)),
			P99LatencyUs: us(r.Latency.Percentile(0.99)),
			IOCompleted:  r.Completed,
			Miscompares:  r.Miscompares,
			Extra:        r.Extra,
		}
		if r.Workload.Mixed() {
			pct := r.ReadPercent
			jr.Percentage = &pct
		}
		if r.Workload == Verify {
			jr.VerifyRange = &verifyRange{Start: r.VerifyStart, Length: r.VerifyLength}
		}
		if r.Err != nil {
			jr.Error = r.Err.Error()
		}
		rep.Results = append(rep.Results, jr)
	}
	rep.CoreCount = len(cores)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(rep)
}
