package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"blockcache/internal/ocf"
	"blockcache/internal/sim"
)

// simOpts are the flags of `blockcache sim`.
type simOpts struct {
	trace, gen, saveTrace string
	cacheMiB, lineKiB     int64
	asJSON                bool
	gp                    sim.GenParams
	wsMiB                 int64
}

// genOnlyFlags only make sense with a generated trace.
var genOnlyFlags = []string{"requests", "seed", "skew", "ws-mib", "write-pct", "save-trace"}

func newSimCmd() *cobra.Command {
	o := simOpts{gp: sim.DefaultGenParams()}
	cmd := &cobra.Command{
		Use:   "sim",
		Short: "Replay a block IO trace through the cache engine under each policy combination",
		Long: `Evaluate the cache engine on a block IO trace, offline: the trace is replayed
through the engine on in-memory devices (a null cache device of --cache-mib,
a null core covering the trace, volatile metadata) under every combination of
mode (wt, wb), promotion (always, nhit), sequential cutoff (never, full,
always) and, in wb, cleaning (alru, acp, nop): 24 replays. A fake clock
follows the trace's times, so the cleaning policies act as in real time.

The trace comes from --trace FILE (CSV with the header time,op,offset,length:
time in seconds, op R or W, offset and length in bytes, multiples of 512; "-"
reads stdin) or from a generator (--gen, default zipf):
  zipf  random 4 KiB requests with Zipf-distributed block popularity (--skew)
        over a working set (--ws-mib), --write-pct of them writes
  scan  zipf, with sequential read scans (128 KiB requests) of fresh data
        interleaved: about ten per trace, each half the working set long;
        data that should not pollute the cache
  seq   8 sequential streams of 128 KiB requests, each looping over its own
        file of --ws-mib/8; --write-pct of the streams write
Generated traces arrive at 5000 IOPS in bursts of 50000 requests with 60 s of
idle between them, and are deterministic for a --seed; --save-trace keeps one.

For each combination it prints: the read hit ratio (read hits / read
requests) and total hit ratio (hits / requests), as the engine's statistics
count them; the pass-through share; "line hit%", the line accesses of
requests that hit over all line accesses (comparable with OPT, and equal to
hit% when no request spans two lines); OPT, Belady's optimal hit ratio for
the same trace and the same number of cache lines, over line accesses (reads
and writes both count, a miss may bypass the cache); the traffic to the core
in 4 KiB blocks, read and written; and the data left dirty at the end, in
4 KiB blocks. See docs/sim.md for the conventions.`,
		Example: `  blockcache sim
  blockcache sim --gen scan --cache-mib 64 --requests 200000
  blockcache sim --gen zipf --skew 1.1 --save-trace zipf.csv
  blockcache sim --trace zipf.csv --line-kib 16 --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runSim(cmd, &o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.trace, "trace", "", `replay this trace file (CSV; "-" for stdin)`)
	f.StringVar(&o.gen, "gen", "", "generate the trace: "+strings.Join(sim.GenKinds(), ", ")+" (default zipf when there is no --trace)")
	f.Int64Var(&o.cacheMiB, "cache-mib", 64, "cache device size in MiB (its metadata included)")
	f.Int64Var(&o.lineKiB, "line-kib", 4, "cache line size in KiB: 4, 8, 16, 32 or 64")
	f.IntVar(&o.gp.Requests, "requests", o.gp.Requests, "generated trace: number of requests")
	f.Uint64Var(&o.gp.Seed, "seed", o.gp.Seed, "generated trace: random seed")
	f.Float64Var(&o.gp.Skew, "skew", o.gp.Skew, "generated trace: Zipf exponent s (zipf, scan)")
	f.Int64Var(&o.wsMiB, "ws-mib", o.gp.WorkingSetBytes>>20, "generated trace: working set in MiB")
	f.IntVar(&o.gp.WritePct, "write-pct", o.gp.WritePct, "generated trace: percentage of random requests (zipf, scan) or of streams (seq) that write")
	f.BoolVar(&o.asJSON, "json", false, "print the report as JSON")
	f.StringVar(&o.saveTrace, "save-trace", "", "write the generated trace to this file (CSV)")
	return cmd
}

func runSim(cmd *cobra.Command, o *simOpts) error {
	reqs, source, err := simTrace(cmd, o)
	if err != nil {
		return err
	}
	if !ocf.ValidLineSize(o.lineKiB << 10) {
		return fmt.Errorf("--line-kib %d: want 4, 8, 16, 32 or 64", o.lineKiB)
	}
	if o.cacheMiB < 1 || o.cacheMiB > 1<<20 {
		return fmt.Errorf("--cache-mib %d: want 1..%d", o.cacheMiB, 1<<20)
	}
	if len(reqs) == 0 {
		return fmt.Errorf("%s: no request to replay", source)
	}
	cfg := sim.Config{CacheBytes: o.cacheMiB << 20, LineBytes: o.lineKiB << 10}
	rep, err := sim.Evaluate(reqs, sim.Policies(), cfg, runtime.GOMAXPROCS(0))
	if err != nil {
		return fmt.Errorf("sim: %w", err)
	}
	out := cmd.OutOrStdout()
	if o.asJSON {
		return writeSimJSON(out, source, rep)
	}
	return writeSimTable(out, source, rep)
}

// simTrace reads or generates the trace, saving it when asked, and says
// where it came from.
func simTrace(cmd *cobra.Command, o *simOpts) ([]sim.Request, string, error) {
	f := cmd.Flags()
	if o.trace != "" {
		if o.gen != "" {
			return nil, "", errors.New("--trace and --gen exclude each other")
		}
		for _, name := range genOnlyFlags {
			if f.Changed(name) {
				return nil, "", fmt.Errorf("--%s applies to a generated trace, not to --trace", name)
			}
		}
		reqs, err := readTraceFile(cmd, o.trace)
		return reqs, "trace " + o.trace, err
	}
	if o.gen == "" {
		o.gen = sim.GenZipf
	}
	if !slices.Contains(sim.GenKinds(), o.gen) {
		return nil, "", fmt.Errorf("--gen %q: want %s", o.gen, strings.Join(sim.GenKinds(), ", "))
	}
	if o.wsMiB < 1 || o.wsMiB > 1<<30 {
		return nil, "", fmt.Errorf("--ws-mib %d: want 1..%d", o.wsMiB, 1<<30)
	}
	o.gp.WorkingSetBytes = o.wsMiB << 20
	reqs, err := sim.Generate(o.gen, o.gp)
	if err != nil {
		return nil, "", err
	}
	source := fmt.Sprintf("generated %s (seed %d, %d requests, working set %d MiB", o.gen, o.gp.Seed, o.gp.Requests, o.wsMiB)
	if o.gen != sim.GenSeq {
		source += fmt.Sprintf(", skew %g", o.gp.Skew)
	}
	source += fmt.Sprintf(", %d%% writes)", o.gp.WritePct)
	if o.saveTrace != "" {
		if err := saveTraceFile(o.saveTrace, reqs); err != nil {
			return nil, "", err
		}
	}
	return reqs, source, nil
}

func readTraceFile(cmd *cobra.Command, path string) ([]sim.Request, error) {
	var r io.Reader = cmd.InOrStdin()
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
	}
	reqs, err := sim.ReadCSV(r)
	if err != nil {
		return nil, fmt.Errorf("trace %s: %w", path, err)
	}
	return reqs, nil
}

func saveTraceFile(path string, reqs []sim.Request) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("--save-trace: %w", err)
	}
	if err := sim.WriteCSV(f, reqs); err != nil {
		f.Close()
		return fmt.Errorf("--save-trace %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("--save-trace %s: %w", path, err)
	}
	return nil
}

func pct(r float64) string { return fmt.Sprintf("%.1f", 100*r) }

func writeSimTable(w io.Writer, source string, rep sim.Report) error {
	t := rep.Trace
	fmt.Fprintf(w, "trace: %s\n", source)
	fmt.Fprintf(w, "  %d requests (%d reads, %d writes), %d MiB read, %d MiB written, span %d MiB, %.1f s\n",
		t.Requests, t.Reads, t.Writes, t.ReadBytes>>20, t.WriteBytes>>20, t.EndBytes>>20, t.DurationSecs)
	fmt.Fprintf(w, "cache: %d MiB device, %d KiB lines, %d lines; OPT (Belady, line accesses): %s%% of %d (reads %s%%)\n\n",
		rep.CacheBytes>>20, rep.LineBytes>>10, rep.Lines, pct(rep.OPT.HitRatio()), rep.OPT.Accesses, pct(rep.OPT.ReadHitRatio()))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "mode\tpromotion\tcutoff\tcleaning\trd hit%\thit%\tpt%\tline hit%\tOPT%\tcore rd 4K\tcore wr 4K\tdirty 4K\t")
	for i := range rep.Results {
		r := &rep.Results[i]
		p := r.Policy
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t\n",
			p.Mode, p.Promotion, p.Cutoff, p.CleaningName(),
			pct(r.ReadHitRatio()), pct(r.HitRatio()), pct(r.PTRatio()), pct(r.LineHitRatio()), pct(rep.OPT.HitRatio()),
			r.Stats.Blocks.CoreRd, r.Stats.Blocks.CoreWr, r.Stats.Usage.Dirty)
	}
	return tw.Flush()
}

// simJSON is the JSON report.
type simJSON struct {
	Source     string          `json:"source"`
	Trace      sim.Summary     `json:"trace"`
	CacheBytes int64           `json:"cache_bytes"`
	LineBytes  int64           `json:"line_bytes"`
	Lines      int             `json:"lines"`
	OPT        simOPTJSON      `json:"opt"`
	Results    []simResultJSON `json:"results"`
}

type simOPTJSON struct {
	sim.OPT
	HitRatio     float64 `json:"hit_ratio"`
	ReadHitRatio float64 `json:"read_hit_ratio"`
}

type simResultJSON struct {
	Mode         string          `json:"mode"`
	Promotion    string          `json:"promotion"`
	SeqCutoff    string          `json:"seq_cutoff"`
	Cleaning     string          `json:"cleaning"`
	ReadHitRatio float64         `json:"read_hit_ratio"`
	HitRatio     float64         `json:"hit_ratio"`
	PTRatio      float64         `json:"pt_ratio"`
	LineHitRatio float64         `json:"line_hit_ratio"`
	LineAccesses uint64          `json:"line_accesses"`
	HitLines     uint64          `json:"hit_lines"`
	Requests     simRequestsJSON `json:"requests"`
	Blocks       simBlocksJSON   `json:"blocks_4k"`
	Usage        simUsageJSON    `json:"usage_4k"`
	CleanSteps   uint64          `json:"clean_steps"`
	CleanedLines uint64          `json:"cleaned_lines"`
}

// The engine's statistics with SPDK's names (bdev_ocf_get_stats).
type simRequestsJSON struct {
	RdHits          uint64 `json:"rd_hits"`
	RdPartialMisses uint64 `json:"rd_partial_misses"`
	RdFullMisses    uint64 `json:"rd_full_misses"`
	RdTotal         uint64 `json:"rd_total"`
	WrHits          uint64 `json:"wr_hits"`
	WrPartialMisses uint64 `json:"wr_partial_misses"`
	WrFullMisses    uint64 `json:"wr_full_misses"`
	WrTotal         uint64 `json:"wr_total"`
	RdPT            uint64 `json:"rd_pt"`
	WrPT            uint64 `json:"wr_pt"`
	Serviced        uint64 `json:"serviced"`
	Total           uint64 `json:"total"`
}

type simBlocksJSON struct {
	CoreRd      uint64 `json:"core_volume_rd"`
	CoreWr      uint64 `json:"core_volume_wr"`
	CoreTotal   uint64 `json:"core_volume_total"`
	CacheRd     uint64 `json:"cache_volume_rd"`
	CacheWr     uint64 `json:"cache_volume_wr"`
	CacheTotal  uint64 `json:"cache_volume_total"`
	VolumeRd    uint64 `json:"volume_rd"`
	VolumeWr    uint64 `json:"volume_wr"`
	VolumeTotal uint64 `json:"volume_total"`
}

type simUsageJSON struct {
	Occupancy uint64 `json:"occupancy"`
	Free      uint64 `json:"free"`
	Clean     uint64 `json:"clean"`
	Dirty     uint64 `json:"dirty"`
}

func writeSimJSON(w io.Writer, source string, rep sim.Report) error {
	out := simJSON{
		Source: source, Trace: rep.Trace, CacheBytes: rep.CacheBytes, LineBytes: rep.LineBytes, Lines: rep.Lines,
		OPT: simOPTJSON{OPT: rep.OPT, HitRatio: rep.OPT.HitRatio(), ReadHitRatio: rep.OPT.ReadHitRatio()},
	}
	for i := range rep.Results {
		r := &rep.Results[i]
		out.Results = append(out.Results, simResultJSON{
			Mode: r.Policy.Mode.String(), Promotion: r.Policy.Promotion.String(), SeqCutoff: r.Policy.Cutoff.String(), Cleaning: r.Policy.CleaningName(),
			ReadHitRatio: r.ReadHitRatio(), HitRatio: r.HitRatio(), PTRatio: r.PTRatio(), LineHitRatio: r.LineHitRatio(),
			LineAccesses: r.LineAccesses, HitLines: r.HitLines,
			Requests: simRequestsJSON(r.Stats.Requests), Blocks: simBlocksJSON(r.Stats.Blocks), Usage: simUsageJSON(r.Stats.Usage),
			CleanSteps: r.CleanSteps, CleanedLines: r.Cleaned,
		})
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}
