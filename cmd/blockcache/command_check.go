package main

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"blockcache/internal/bdev/file"
	"blockcache/internal/ocf"
	"blockcache/internal/ocf/metadata"
)

// Exit statuses of the offline tools (check, inspect).
const (
	exitDamaged    = 1 // the metadata is damaged, or the device could not be read
	exitNoMetadata = 2 // the device holds no cache
	exitInUse      = 3 // a daemon (or another program) holds the device
)

// openCacheDevice opens a cache device (an image file or a block device)
// read-only, with the 512-byte blocks the engine reads it in, under a
// shared lock: it fails with file.ErrInUse while a daemon holds the device,
// and keeps a daemon from taking it while open. The device is named after
// the file, so that errors naming it stay short.
func openCacheDevice(path string) (*file.Device, error) {
	return file.Open(filepath.Base(path), path, file.Options{ReadOnly: true, BlockSize: metadata.SectorBytes})
}

// openFailed reports a device an offline tool could not open. A device in
// use says so, and what to do, and exits with exitInUse.
func openFailed(cmd *cobra.Command, tool, path string, err error) error {
	if errors.Is(err, file.ErrInUse) {
		fmt.Fprintf(cmd.ErrOrStderr(), "blockcache: %s %s: %v; stop the daemon, or delete the bdev on it (bdev_aio_delete), first\n", tool, path, err)
		return exitError{exitInUse}
	}
	return fmt.Errorf("%s %s: %w", tool, path, err)
}

// superblockCopy names the copy a superblock of sequence seq is written to
// (copy seq%2: A or B).
func superblockCopy(seq uint64) string {
	return string(rune('A' + seq%2))
}

func newCheckCmd() *cobra.Command {
	var forceProgress bool
	var progressAfter time.Duration
	cmd := &cobra.Command{
		Use:   "check DEVICE",
		Short: "Check the cache metadata on DEVICE offline, read-only, without a daemon",
		Long: `Check the cache held by DEVICE, an image file or a block device, without a
daemon: read its superblocks and every entry sector exactly as loading the
cache would, then check the cache built from them (line lists, mapping,
counts). Nothing is written to DEVICE.

It prints a summary: whether the cache was shut down cleanly, the lines that
loading it would keep and how many of them are dirty, the clean lines an
unclean shutdown makes it drop, and a warning when one superblock copy is
damaged (the other is then used). Loading a cache with many lines takes a
while; after a second a progress bar is shown on stderr when stderr is a
terminal (or with --progress).

Exit status: 0 when the metadata is sound; 1 when it is damaged (the message
names the damaged region, e.g. the entry sector and the lines it holds) or
DEVICE cannot be read; 2 when DEVICE holds no cache at all; 3 when DEVICE is
in use.

The cache device of a running daemon is a moving target: DEVICE is opened
with a shared lock, which fails while a daemon holds it (the message names
the daemon's pid); stop the daemon first.`,
		Example: `  blockcache check ./blockcache-data/cache.img`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runCheck(cmd, args[0], forceProgress, progressAfter)
		},
	}
	f := cmd.Flags()
	f.BoolVar(&forceProgress, "progress", false, "show the progress bar even when stderr is not a terminal")
	f.DurationVar(&progressAfter, "progress-after", time.Second, "show the progress bar once loading has taken this long")
	f.MarkHidden("progress-after") //nolint:errcheck // the flag exists
	return cmd
}

func runCheck(cmd *cobra.Command, path string, forceProgress bool, progressAfter time.Duration) error {
	stderr := cmd.ErrOrStderr()
	dev, err := openCacheDevice(path)
	if err != nil {
		return openFailed(cmd, "check", path, err)
	}
	defer dev.Close()
	pv := newProgressView(stderr, "load "+dev.Info().Name, "sectors", forceProgress, progressAfter)
	rep, err := ocf.Verify(dev, func(op string, done, total int64) {
		if op == "load" {
			pv.update(done, total)
		}
	})
	pv.finish()
	switch {
	case errors.Is(err, metadata.ErrNoMetadata):
		fmt.Fprintf(stderr, "blockcache: check %s: no cache on this device: neither superblock copy (at byte 0 and %d) holds blockcache metadata (%v)\n",
			path, metadata.SuperblockCopyBytes, err)
		return exitError{exitNoMetadata}
	case err != nil:
		fmt.Fprintf(stderr, "blockcache: check %s: damaged: %v\n", path, err)
		return exitError{exitDamaged}
	}
	return writeCheckSummary(cmd.OutOrStdout(), path, rep)
}

// writeCheckSummary prints what a successful check found.
func writeCheckSummary(w io.Writer, path string, rep *ocf.LoadReport) error {
	sb := rep.Superblock
	g := sb.Geometry
	fmt.Fprintf(w, "%s: cache metadata OK\n", path)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, format string, args ...any) {
		fmt.Fprintf(tw, "  %s\t"+format+"\n", append([]any{k}, args...)...)
	}
	row("cache id", "%s", sb.CacheID)
	row("superblock", "copy %s, sequence %d", superblockCopy(sb.Seq), sb.Seq)
	if rep.Clean {
		row("shutdown", "clean")
	} else {
		row("shutdown", "not clean (the cache was not stopped: only its dirty data is kept)")
	}
	row("mode", "%s", ocf.Mode(sb.Mode))
	row("line size", "%s", humanSize(uint64(g.LineSize)))
	row("cache lines", "%d", g.NumLines)
	row("lines", "%d", rep.Lines)
	row("dirty lines", "%d", rep.DirtyLines)
	row("dropped clean lines", "%d", rep.DroppedClean)
	row("cores", "%d", len(sb.Cores))
	for _, c := range sb.Cores {
		row(fmt.Sprintf("core %d", c.ID), "%q (%s), volume %q %s", c.CoreName, humanSize(c.SizeBytes), c.VolumeName, c.VolumeUUID)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if rep.Damaged != nil {
		_, err := fmt.Fprintf(w, "warning: %v; the other copy was used (loading the cache rewrites both)\n", rep.Damaged)
		return err
	}
	return nil
}
