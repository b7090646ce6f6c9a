package main

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"blockcache/internal/bdev"
	"blockcache/internal/bdev/file"
	"blockcache/internal/ocf/metadata"
	"blockcache/internal/ocf/recovery"
)

// exitLost is recover's status when it wrote back what it could but some
// dirty data could not be recovered (each range is listed).
const exitLost = 4

func newRecoverCmd() *cobra.Command {
	var coreArgs []string
	var dryRun, forceProgress bool
	var lineSizeKiB int64
	var progressAfter time.Duration
	cmd := &cobra.Command{
		Use:   "recover CACHE-DEVICE --core ID=CORE-DEVICE ... [--dry-run] [--line-size-kib N]",
		Short: "Write the dirty data on a damaged cache device back to its cores, offline",
		Long: `Write back to its cores every dirty sector of the cache on CACHE-DEVICE (an
image file or a block device) whose entry sector is intact, without a
daemon, even when both superblock copies are gone: the offline counterpart
of a flush, for a cache that can no longer be loaded. CACHE-DEVICE is opened
read-only and never written.

The geometry comes from --line-size-kib if given, else from whichever
superblock copy is readable, else from the entry area itself: every entry
sector carries its index and the cache's tag, and each line size gives the
device its own number of entry sectors.

Give one --core ID=CORE-DEVICE for every core id that has dirty data (the
report names them); a core device smaller than the data it must take is
refused, and nothing is written. The report then lists precisely what
cannot be recovered: the cache lines of each damaged entry sector, and lines
whose data the cache device failed to read, with their byte ranges on the
cache device.

--dry-run reports what would be written where, and writes nothing.

After a successful recovery the cores hold the data; start the cache over
the device with force (bdev_ocf_create ... force) to reinitialise it.

Exit status: 0 when all dirty data was written back (or, with --dry-run,
can be); 1 on an error (nothing written, or the write-back stopped where the
message says); 2 when CACHE-DEVICE shows no sign of a cache; 3 when a
daemon holds a device; 4 when some dirty data could not be recovered (the
rest was written back).`,
		Example: `  blockcache recover ./blockcache-data/cache.img --core 0=./blockcache-data/core.img --dry-run
  blockcache recover /dev/nvme0n1p1 --core 0=/dev/sdb --core 1=/dev/sdc`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cores, err := parseCoreArgs(coreArgs)
			if err != nil {
				return fmt.Errorf("recover %s: %w", args[0], err)
			}
			r := &recoverRun{cmd: cmd, cachePath: args[0], corePaths: cores, dryRun: dryRun,
				lineSize: lineSizeKiB << 10, forceProgress: forceProgress, progressAfter: progressAfter}
			return r.run()
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&coreArgs, "core", nil, "ID=CORE-DEVICE: write core ID's dirty data to CORE-DEVICE (repeat for each core)")
	f.BoolVar(&dryRun, "dry-run", false, "report what would be written where, and write nothing")
	f.Int64Var(&lineSizeKiB, "line-size-kib", 0, "the cache line size in KiB (4, 8, 16, 32 or 64), when the metadata cannot tell it")
	f.BoolVar(&forceProgress, "progress", false, "show the progress bar even when stderr is not a terminal")
	f.DurationVar(&progressAfter, "progress-after", time.Second, "show the progress bar once an operation has taken this long")
	f.MarkHidden("progress-after") //nolint:errcheck // the flag exists
	return cmd
}

// parseCoreArgs parses the --core ID=PATH values.
func parseCoreArgs(args []string) (map[uint16]string, error) {
	cores := map[uint16]string{}
	for _, a := range args {
		idText, path, ok := strings.Cut(a, "=")
		id, err := strconv.ParseUint(idText, 10, 16)
		if !ok || path == "" || err != nil || id >= metadata.NoCore {
			return nil, fmt.Errorf("--core %q: want ID=CORE-DEVICE, ID a core id from 0 to %d", a, metadata.NoCore-1)
		}
		if prev, dup := cores[uint16(id)]; dup {
			return nil, fmt.Errorf("--core %q: core %d is already given as %s", a, id, prev)
		}
		cores[uint16(id)] = path
	}
	return cores, nil
}

// recoverRun is one run of the recover command.
type recoverRun struct {
	cmd           *cobra.Command
	cachePath     string
	corePaths     map[uint16]string
	dryRun        bool
	lineSize      int64 // bytes; 0 = from the metadata
	forceProgress bool
	progressAfter time.Duration
}

func (r *recoverRun) run() error {
	out, stderr := r.cmd.OutOrStdout(), r.cmd.ErrOrStderr()
	cache, err := openCacheDevice(r.cachePath)
	if err != nil {
		return openFailed(r.cmd, "recover", r.cachePath, err)
	}
	defer cache.Close()

	views := map[string]*progressView{}
	progress := func(op string, done, total int64) {
		if views[op] == nil {
			views[op] = newProgressView(stderr, op+" "+cache.Info().Name, "sectors", r.forceProgress, r.progressAfter)
		}
		views[op].update(done, total)
	}
	plan, err := recovery.Analyze(cache, recovery.Options{LineSize: r.lineSize, Progress: progress})
	for _, v := range views {
		v.finish()
	}
	switch {
	case errors.Is(err, recovery.ErrNoCache):
		fmt.Fprintf(stderr, "blockcache: recover %s: %v\n", r.cachePath, err)
		return exitError{exitNoMetadata}
	case errors.Is(err, recovery.ErrGeometry):
		return fmt.Errorf("recover %s: %w (--line-size-kib)", r.cachePath, err)
	case err != nil:
		return fmt.Errorf("recover %s: %w", r.cachePath, err)
	}
	writePlan(out, r.cachePath, plan)

	cores := map[uint16]bdev.Device{}
	for _, id := range slices.Sorted(maps.Keys(r.corePaths)) {
		path := r.corePaths[id]
		opts := file.Options{ReadOnly: r.dryRun}
		dev, err := file.Open(filepath.Base(path), path, opts)
		if err != nil {
			return openFailed(r.cmd, "recover", path, fmt.Errorf("core %d: %w", id, err))
		}
		defer dev.Close()
		cores[id] = dev
		r.describeCore(out, stderr, plan, id, dev)
	}
	if err := plan.Check(cores); err != nil {
		return fmt.Errorf("recover %s: nothing written: %w", r.cachePath, err)
	}
	if r.dryRun {
		writeExtents(out, plan, r.corePaths)
		writeLost(out, plan.Lost)
		fmt.Fprintf(out, "dry run: %d dirty lines (%s) would be written back; nothing was written\n", len(plan.Dirty), humanSize(uint64(plan.DirtyBytes())))
		if len(plan.Lost) > 0 {
			return exitError{exitLost}
		}
		return nil
	}

	pv := newProgressView(stderr, "write back", "lines", r.forceProgress, r.progressAfter)
	res, err := plan.Execute(cache, cores, pv.update)
	pv.finish()
	if res != nil {
		for _, id := range plan.CoreIDs() {
			fmt.Fprintf(out, "core %d: wrote %s back to %s\n", id, humanSize(uint64(res.Bytes[id])), r.corePaths[id])
		}
	}
	if err != nil {
		return fmt.Errorf("recover %s: %w", r.cachePath, err)
	}
	lost := append(slices.Clip(plan.Lost), res.Lost...)
	writeLost(out, lost)
	fmt.Fprintf(out, "recovered %d of %d dirty lines; the cores are flushed\n", res.Lines, len(plan.Dirty))
	if len(lost) > 0 {
		return exitError{exitLost}
	}
	return nil
}

// writePlan prints where the metadata came from and what it holds.
func writePlan(w io.Writer, path string, p *recovery.Plan) {
	g := p.Geometry
	fmt.Fprintf(w, "%s: %s\n", path, humanSize(uint64(p.DevBytes)))
	if p.Superblock != nil {
		fmt.Fprintf(w, "  cache        %s (superblock copy %s, sequence %d)\n", p.Superblock.CacheID, p.SuperblockCopy, p.Superblock.Seq)
	} else {
		fmt.Fprintf(w, "  cache        %s... (tag of %d intact entry sectors; no superblock)\n", p.Tag, p.Scan.Tags[p.Tag])
	}
	for _, s := range p.SuperblockProblems {
		fmt.Fprintf(w, "  superblock   %s\n", s)
	}
	fmt.Fprintf(w, "  geometry     %s lines, %d lines, entries at byte %d, data at byte %d (from %s)\n",
		humanSize(uint64(g.LineSize)), g.NumLines, metadata.SuperblockArea, g.DataOffset, p.GeometryFrom)
	fmt.Fprintf(w, "  entries      %d sectors, %d damaged; %d mapped lines, %d dirty (%s)\n",
		g.EntrySectors, p.DamagedSectors, p.MappedLines, len(p.Dirty), humanSize(uint64(p.DirtyBytes())))
}

// describeCore prints what core id must take and warns when the device
// given is not the one the superblock recorded.
func (r *recoverRun) describeCore(out, stderr io.Writer, p *recovery.Plan, id uint16, dev bdev.Device) {
	info := dev.Info()
	need := p.Cores[id]
	if need == nil {
		fmt.Fprintf(out, "  core %d       no dirty data; nothing to write to %s\n", id, r.corePaths[id])
		return
	}
	fmt.Fprintf(out, "  core %d       %d dirty lines (%s) to %s (%s)\n", id, need.Lines, humanSize(uint64(need.Bytes)), r.corePaths[id], humanSize(uint64(info.SizeBytes())))
	rec := need.Record
	if rec == nil {
		return
	}
	if got := bdev.IdentityOf(dev); rec.Identity != "" && got != rec.Identity {
		fmt.Fprintf(stderr, "blockcache: recover: warning: core %d was recorded with identity %q, %s is %q\n", id, rec.Identity, r.corePaths[id], got)
	}
	if uint64(info.SizeBytes()) != rec.SizeBytes {
		fmt.Fprintf(stderr, "blockcache: recover: warning: core %d was recorded as %d bytes, %s is %d bytes\n", id, rec.SizeBytes, r.corePaths[id], info.SizeBytes())
	}
}

// writeExtents lists the runs a write-back would write, adjacent runs
// merged.
func writeExtents(w io.Writer, p *recovery.Plan, paths map[uint16]string) {
	var cur recovery.Extent
	emit := func() {
		if cur.Bytes > 0 {
			fmt.Fprintf(w, "would write core %d (%s) bytes %d..%d (%s) from cache bytes %d..%d\n", cur.Core, paths[cur.Core],
				cur.CoreOffset, cur.CoreOffset+cur.Bytes-1, humanSize(uint64(cur.Bytes)), cur.CacheOffset, cur.CacheOffset+cur.Bytes-1)
		}
	}
	for _, d := range p.Dirty {
		for _, e := range p.Extents(d) {
			if cur.Bytes > 0 && e.Core == cur.Core && e.CoreOffset == cur.CoreOffset+cur.Bytes && e.CacheOffset == cur.CacheOffset+cur.Bytes {
				cur.Bytes += e.Bytes
				continue
			}
			emit()
			cur = e
		}
	}
	emit()
}

// writeLost lists what cannot be recovered.
func writeLost(w io.Writer, lost []recovery.Loss) {
	for _, l := range lost {
		fmt.Fprintf(w, "NOT RECOVERED: %v\n", l)
	}
}
