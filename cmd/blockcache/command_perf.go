package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"blockcache/internal/bdev"
	"blockcache/internal/cpumask"
	"blockcache/internal/perf"
)

// perfOpts are perf's flags, named as bdevperf's.
type perfOpts struct {
	queueDepth  int
	ioSize      string
	workload    string
	seconds     string
	readPercent int
	config      string
	mask        string
	everyCore   bool
	bdevName    string
	continueOn  bool
	summary     bool
	json        bool
	warmup      string
	ioPoll      time.Duration
}

// DefaultPerfIOPoll is perf's default io_uring completion poll budget.
// bdevperf's reactor polls its bdevs without pause; a budget of a
// millisecond covers a disk's read at any queue depth (about 0.2 ms at QD32
// on the test VM's virtio disk), so the rings of a running job never sleep,
// and a job that stops lets them park a millisecond later.
const DefaultPerfIOPoll = time.Millisecond

// perfJobs is a parsed perf command line, ready to turn into jobs.
type perfJobs struct {
	workload    perf.Workload
	ioSize      int64
	duration    time.Duration
	warmup      time.Duration
	readPercent int
}

func newPerfCmd() *cobra.Command {
	o := &perfOpts{}
	cmd := &cobra.Command{
		Use:   "perf -c CONFIG -q DEPTH -o SIZE -w WORKLOAD -t SECONDS [-M PCT] [-m MASK] [-C] [-T BDEV]",
		Short: "Measure bdevs in-process, as SPDK's bdevperf does",
		Long: `Build the bdevs of an SPDK JSON config in this process, exactly as
"serve --config" would (no daemon is needed or contacted), and drive them with
bdevperf's workloads through the same device interface the NBD server uses,
then print bdevperf's report: per job its runtime, IOPS, MiB/s, Fail/s, TO/s
and average, min and max latency in microseconds, and a Total line.

Without -T every bdev that nothing else holds is driven (a cache volume, not
its cache and core), one job per bdev on the CPUs in turn; -C runs a job on
every CPU for every bdev, each on its own slice of the bdev. -m pins the
process to the CPUs of the mask (SPDK's -m) with one Go scheduler slot each;
a job's goroutines run on any CPU of the mask, its "Core Mask" is the CPU it
is counted on. Workloads: read, write, randread, randwrite, rw, randrw (with
-M, the read percentage), verify (write a pattern, read it back, compare),
flush, unmap, write_zeroes. --warmup S runs the jobs for S seconds first and
reports nothing of it, so that a cache built fresh from the config (a RAM
disk's is empty) is measured warm. io_uring bdevs poll for their completions
for up to --io-poll (default 1ms) while IO is in flight, as bdevperf's
reactor polls its bdevs; --io-poll 0 sleeps instead, as "serve" does by
default.

The exit status is 1 if a job failed (an IO error, or with verify data read
back wrong), unless -f lets jobs go on after failed IOs; a miscompare always
fails the run.

For a cache volume it adds, after the table (and in the JSON under
"extra"), the share of its reads and writes over the run that hit.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runPerf(cmd, o) },
	}
	f := cmd.Flags()
	f.IntVarP(&o.queueDepth, "queue-depth", "q", 0, "IOs in flight per job (bdevperf's -q; required)")
	f.StringVarP(&o.ioSize, "io-size", "o", "", "bytes per IO: 4096, 4k, 64K, 1m (bdevperf's -o; required)")
	f.StringVarP(&o.workload, "workload", "w", "", "read, write, randread, randwrite, rw, randrw, verify, flush, unmap or write_zeroes (bdevperf's -w; required)")
	f.StringVarP(&o.seconds, "time", "t", "", "seconds to run, fractions allowed (bdevperf's -t; required)")
	f.IntVarP(&o.readPercent, "rwmixread", "M", -1, "percentage of reads for rw and randrw, 0..100 (bdevperf's -M)")
	f.StringVarP(&o.config, "config", "c", "", "SPDK JSON config that creates the bdevs (required)")
	f.StringVarP(&o.mask, "cpumask", "m", "", "run on these CPUs only: a hex mask like 0x1 or a list like [0,2-3] (SPDK's -m); default: every CPU the process may use")
	f.BoolVarP(&o.everyCore, "multithread", "C", false, "run a job on every CPU for every bdev, each on its own slice (bdevperf's -C)")
	f.StringVarP(&o.bdevName, "bdev", "T", "", "drive this bdev only (bdevperf's -T)")
	f.BoolVarP(&o.continueOn, "continue-on-failure", "f", false, "keep a job running after a failed IO (bdevperf's -f)")
	f.BoolVarP(&o.summary, "latency-summary", "l", false, "add per job latency percentiles, 1% to 99.99999% (bdevperf's -l)")
	f.StringVar(&o.warmup, "warmup", "0", "seconds to run the same jobs first, unreported, so that a cache starts warm (ours; bdevperf has none)")
	f.DurationVar(&o.ioPoll, "io-poll", DefaultPerfIOPoll, "io_uring bdevs poll for their completions for up to this long while IO is in flight, as bdevperf's reactor does (ours; 0 sleeps instead, as serve does by default)")
	f.BoolVar(&o.json, "json", false, "print the results as JSON, as bdevperf's perform_tests returns them, with p50 and p99 latency")
	return cmd
}

// parse checks the flags that do not need the bdevs.
func (o *perfOpts) parse(warn io.Writer) (perfJobs, error) {
	var p perfJobs
	switch {
	case o.config == "":
		return p, errors.New("-c/--config is required: an SPDK JSON config that creates the bdevs to measure")
	case o.queueDepth == 0:
		return p, errors.New("-q/--queue-depth is required")
	case o.ioSize == "":
		return p, errors.New("-o/--io-size is required")
	case o.workload == "":
		return p, errors.New("-w/--workload is required")
	case o.seconds == "":
		return p, errors.New("-t/--time is required")
	case o.queueDepth < 0 || o.queueDepth > perf.MaxQueueDepth:
		return p, fmt.Errorf("-q %d: want 1..%d", o.queueDepth, perf.MaxQueueDepth)
	case o.ioPoll < 0:
		return p, fmt.Errorf("--io-poll %v: must not be negative", o.ioPoll)
	}
	var err error
	if p.ioSize, err = perf.ParseSize(o.ioSize); err != nil {
		return p, fmt.Errorf("-o: %w", err)
	}
	if p.workload, err = perf.ParseWorkload(o.workload); err != nil {
		return p, fmt.Errorf("-w: %w", err)
	}
	secs, err := strconv.ParseFloat(o.seconds, 64)
	if err != nil || math.IsNaN(secs) || secs <= 0 || secs > 1e6 {
		return p, fmt.Errorf("-t %q: want a number of seconds above 0 and at most 1000000", o.seconds)
	}
	p.duration = time.Duration(secs * float64(time.Second))
	warm, err := strconv.ParseFloat(o.warmup, 64)
	if err != nil || math.IsNaN(warm) || warm < 0 || warm > 1e6 {
		return p, fmt.Errorf("--warmup %q: want a number of seconds from 0 to 1000000", o.warmup)
	}
	p.warmup = time.Duration(warm * float64(time.Second))
	switch {
	case p.workload.Mixed() && (o.readPercent < 0 || o.readPercent > 100):
		return p, fmt.Errorf("-M must be given, 0..100, with -w %s", p.workload)
	case !p.workload.Mixed() && o.readPercent != -1:
		fmt.Fprintf(warn, "blockcache perf: -M is ignored with -w %s; use it only with rw or randrw\n", p.workload)
	}
	p.readPercent = o.readPercent
	return p, nil
}

// perfCPUs pins the process to mask, if given, and returns the CPUs the
// jobs are counted on: the mask's, or every CPU the process may use.
func perfCPUs(mask string) ([]int, error) {
	var set unix.CPUSet
	if mask != "" {
		var err error
		if set, err = cpumask.Parse(mask); err != nil {
			return nil, fmt.Errorf("-m/--cpumask: %w", err)
		}
		if err := cpumask.Pin(set); err != nil {
			return nil, fmt.Errorf("-m/--cpumask %s: %w", mask, err)
		}
	} else if err := unix.SchedGetaffinity(0, &set); err != nil {
		return nil, fmt.Errorf("read the allowed CPUs: %w", err)
	}
	var cpus []int
	for c := 0; c < len(set)*64; c++ {
		if set.IsSet(c) {
			cpus = append(cpus, c)
		}
	}
	return cpus, nil
}

// perfJobList makes the jobs: one per bdev on the CPUs in turn, or with
// everyCore one per CPU per bdev, each on its own equal slice of the bdev
// (bdevperf's -C).
func perfJobList(devs []bdev.Device, cpus []int, p perfJobs, o *perfOpts) ([]perf.Job, error) {
	var jobs []perf.Job
	next := 0
	for _, d := range devs {
		info := d.Info()
		base := perf.Job{
			Name: info.Name, Dev: d, Workload: p.workload, QueueDepth: o.queueDepth,
			IOSize: p.ioSize, ReadPercent: p.readPercent, ContinueOnFailure: o.continueOn,
		}
		if !o.everyCore {
			base.Core = cpus[next%len(cpus)]
			next++
			jobs = append(jobs, base)
			continue
		}
		perJob := int64(info.NumBlocks/uint64(len(cpus))) * int64(info.BlockSize)
		if perJob < p.ioSize {
			return nil, fmt.Errorf("-C: %s (%d bytes) split among %d CPUs leaves less than one %d-byte IO per CPU", info.Name, info.SizeBytes(), len(cpus), p.ioSize)
		}
		for i, c := range cpus {
			j := base
			j.Core, j.Offset, j.Length = c, int64(i)*perJob, perJob
			jobs = append(jobs, j)
		}
	}
	for i := range jobs {
		jobs[i].Seed = uint64(time.Now().UnixNano()) + uint64(i)*0x9e3779b97f4a7c15
	}
	return jobs, nil
}

func runPerf(cmd *cobra.Command, o *perfOpts) error {
	stdout, stderr := cmd.OutOrStdout(), cmd.ErrOrStderr()
	p, err := o.parse(stderr)
	if err != nil {
		return err
	}
	cpus, err := perfCPUs(o.mask)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	bdevs, err := buildPerfBdevs(ctx, o.config, o.ioPoll, log, stderr)
	if err != nil {
		return err
	}
	defer func() {
		if err := bdevs.close(); err != nil {
			fmt.Fprintf(stderr, "blockcache perf: closing the bdevs: %v\n", err)
		}
	}()
	devs, err := bdevs.targets(o.bdevName)
	if err != nil {
		return err
	}
	jobs, err := perfJobList(devs, cpus, p, o)
	if err != nil {
		return err
	}
	if err := perf.Check(jobs); err != nil {
		return err
	}
	if p.warmup > 0 {
		if _, err := perf.Run(ctx, jobs, p.warmup); err != nil {
			return fmt.Errorf("warm-up: %w", err)
		}
		if ctx.Err() != nil {
			return fmt.Errorf("warm-up interrupted: %w", context.Cause(ctx))
		}
	}
	if !o.json {
		fmt.Fprintf(stdout, "Running I/O for %s seconds...\n", strconv.FormatFloat(p.duration.Seconds(), 'f', -1, 64))
	}
	before := bdevs.volumeRequests(devs)
	results, err := perf.Run(ctx, jobs, p.duration)
	if err != nil {
		return err
	}
	var hits strings.Builder
	addHitRatios(&hits, results, before, bdevs.volumeRequests(devs))
	if results[0].Terminated && !o.json {
		fmt.Fprintf(stdout, "Received shutdown signal, test time was about %.6f seconds\n", results[0].Runtime.Seconds())
	}
	if o.json {
		err = perf.WriteJSON(stdout, results)
	} else {
		if err = perf.WriteText(stdout, results, o.summary); err == nil && hits.Len() > 0 {
			_, err = fmt.Fprintf(stdout, "\n%s", hits.String())
		}
	}
	if err != nil {
		return err
	}
	failed := false
	for _, r := range results {
		if r.Err != nil {
			fmt.Fprintf(stderr, "blockcache perf: job %s (Core Mask %s): %d failed IOs, the first: %v\n", r.Job, perf.CoreMask(r.Core), r.Failed, r.Err)
		}
		if r.Status() == "failed" || r.Miscompares > 0 {
			failed = true
		}
	}
	if failed {
		return exitError{1}
	}
	return nil
}
