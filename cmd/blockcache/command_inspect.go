package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"blockcache/internal/bdev"
	"blockcache/internal/ocf"
	"blockcache/internal/ocf/metadata"
)

func newInspectCmd() *cobra.Command {
	var entries, asJSON bool
	cmd := &cobra.Command{
		Use:   "inspect DEVICE [--entries] [--json]",
		Short: "Dump the cache metadata on DEVICE offline: superblocks and, with --entries, line entries",
		Long: `Dump the cache metadata held by DEVICE, an image file or a block device,
without a daemon and without writing to it: both superblock copies (each
valid or the reason it is not; sequence, flags, cache id, mode, line size,
geometry, policies and cores), and which copy is current (the valid copy
with the higher sequence number, which loading the cache would use).

With --entries, also every mapped line's entry, read sector by sector from
the entry area using the current copy's geometry: the line, the entry
sector and slot holding it, its core and core line, its valid and dirty
sector masks in hex (bit i = sector i of the line) and how many sectors
each has. A damaged entry sector is reported where it is met, and the dump
goes on.

--json prints the same as one JSON object.

Exit status: 0 when a current superblock was found (even if entry sectors
are damaged: check gives the verdict); 1 when neither copy is valid or
DEVICE cannot be read; 2 when DEVICE holds no cache at all; 3 when DEVICE is
in use (a daemon holds it: stop the daemon first).`,
		Example: `  blockcache inspect ./blockcache-data/cache.img
  blockcache inspect ./blockcache-data/cache.img --entries --json | jq '.entries.lines[] | select(.dirty_sectors > 0)'`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runInspect(cmd, args[0], entries, asJSON)
		},
	}
	f := cmd.Flags()
	f.BoolVar(&entries, "entries", false, "also dump every mapped line entry")
	f.BoolVar(&asJSON, "json", false, "print JSON instead of text")
	return cmd
}

// superblockDump is one superblock copy as inspect shows it. The fields of
// superblockFields are present only for a valid copy.
type superblockDump struct {
	Copy    string `json:"copy"`
	Offset  int64  `json:"offset"`
	Valid   bool   `json:"valid"`
	Current bool   `json:"current"`
	Error   string `json:"error,omitempty"`
	*superblockFields
}

type superblockFields struct {
	Seq        uint64                     `json:"seq"`
	Flags      uint32                     `json:"flags"`
	Clean      bool                       `json:"clean"`
	CacheID    string                     `json:"cache_id"`
	Mode       string                     `json:"mode"`
	ModeNumber uint8                      `json:"mode_number"`
	LineSize   int64                      `json:"line_size"`
	Geometry   geometryDump               `json:"geometry"`
	Promotion  uint8                      `json:"promotion_policy"`
	Cleaning   uint8                      `json:"cleaning_policy"`
	SeqCutoff  uint8                      `json:"seq_cutoff_policy"`
	Params     [metadata.NumParams]uint32 `json:"params"`
	Cores      []coreDump                 `json:"cores"`
}

type geometryDump struct {
	LineSize         int64 `json:"line_size"`
	SectorsPerLine   int   `json:"sectors_per_line"`
	NumLines         int64 `json:"num_lines"`
	EntryOffset      int64 `json:"entry_offset"`
	EntrySectors     int64 `json:"entry_sectors"`
	EntriesPerSector int   `json:"entries_per_sector"`
	DataOffset       int64 `json:"data_offset"`
}

type coreDump struct {
	ID         uint16 `json:"id"`
	CoreName   string `json:"core_name"`
	VolumeName string `json:"volume_name"`
	SizeBytes  uint64 `json:"size_bytes"`
	VolumeUUID string `json:"volume_uuid"`
}

// entryDump is one mapped line's entry.
type entryDump struct {
	Line         int64  `json:"line"`
	Sector       int64  `json:"sector"`
	Slot         int    `json:"slot"`
	Core         uint16 `json:"core"`
	CoreLine     uint32 `json:"core_line"`
	Valid        string `json:"valid"` // hex, sectorsPerLine/4 digits
	Dirty        string `json:"dirty"`
	ValidSectors int    `json:"valid_sectors"`
	DirtySectors int    `json:"dirty_sectors"`
	// Problem is what a load would reject in this entry, if anything.
	Problem string `json:"problem,omitempty"`
}

// badSectorDump is an entry sector that could not be read or decoded.
type badSectorDump struct {
	Sector    int64  `json:"sector"`
	Offset    int64  `json:"offset"`
	FirstLine int64  `json:"first_line"`
	LastLine  int64  `json:"last_line"`
	Error     string `json:"error"`
}

func (b *badSectorDump) String() string {
	return fmt.Sprintf("entry sector %d (byte offset %d, lines %d..%d): %s", b.Sector, b.Offset, b.FirstLine, b.LastLine, b.Error)
}

// entryTotals counts what an entry scan found.
type entryTotals struct {
	Mapped, Dirty, Bad int64
}

func dumpSuperblock(copyName string, off int64, b []byte, devBytes int64) superblockDump {
	d := superblockDump{Copy: copyName, Offset: off}
	sb, err := metadata.DecodeSuperblock(b, devBytes)
	if err != nil {
		d.Error = err.Error()
		return d
	}
	d.Valid = true
	g := sb.Geometry
	f := &superblockFields{
		Seq: sb.Seq, Flags: sb.Flags, Clean: sb.Clean(), CacheID: sb.CacheID.String(),
		Mode: ocf.Mode(sb.Mode).String(), ModeNumber: sb.Mode, LineSize: g.LineSize,
		Geometry: geometryDump{
			LineSize: g.LineSize, SectorsPerLine: g.SectorsPerLine(), NumLines: g.NumLines,
			EntryOffset: metadata.SuperblockArea, EntrySectors: g.EntrySectors,
			EntriesPerSector: metadata.EntriesPerSector(g.SectorsPerLine()), DataOffset: g.DataOffset,
		},
		Promotion: sb.Promotion, Cleaning: sb.Cleaning, SeqCutoff: sb.SeqCutoff, Params: sb.Params,
		Cores: []coreDump{},
	}
	for _, c := range sb.Cores {
		f.Cores = append(f.Cores, coreDump{ID: c.ID, CoreName: c.CoreName, VolumeName: c.VolumeName, SizeBytes: c.SizeBytes, VolumeUUID: c.VolumeUUID.String()})
	}
	d.superblockFields = f
	return d
}

func runInspect(cmd *cobra.Command, path string, withEntries, asJSON bool) error {
	stderr := cmd.ErrOrStderr()
	dev, err := openCacheDevice(path)
	if err != nil {
		return openFailed(cmd, "inspect", path, err)
	}
	defer dev.Close()
	devBytes := dev.Info().SizeBytes()
	if devBytes < metadata.SuperblockArea {
		fmt.Fprintf(stderr, "blockcache: inspect %s: no cache on this device: its %d bytes cannot hold the %d-byte superblock area\n",
			path, devBytes, metadata.SuperblockArea)
		return exitError{exitNoMetadata}
	}
	area := make([]byte, metadata.SuperblockArea)
	if err := dev.ReadAt(area, 0); err != nil {
		return fmt.Errorf("inspect %s: read superblocks: %w", path, err)
	}
	a, b := area[:metadata.SuperblockCopyBytes], area[metadata.SuperblockCopyBytes:]
	copies := []superblockDump{
		dumpSuperblock("A", 0, a, devBytes),
		dumpSuperblock("B", metadata.SuperblockCopyBytes, b, devBytes),
	}
	current, _, curErr := metadata.Newest(a, b, devBytes)
	if curErr == nil {
		// Newest takes the higher sequence number, copy A on a tie.
		for i := range copies {
			if copies[i].Valid && copies[i].Seq == current.Seq {
				copies[i].Current = true
				break
			}
		}
	}

	out := bufio.NewWriter(cmd.OutOrStdout())
	var sc *entryScan
	if withEntries && curErr == nil {
		sc = &entryScan{dev: dev, sb: current}
	}
	if asJSON {
		err = writeInspectJSON(out, path, devBytes, copies, curErr, sc)
	} else {
		err = writeInspectText(out, path, devBytes, copies, curErr, withEntries, sc)
	}
	if ferr := out.Flush(); err == nil {
		err = ferr
	}
	if err != nil {
		return fmt.Errorf("inspect %s: %w", path, err)
	}
	switch {
	case errors.Is(curErr, metadata.ErrNoMetadata):
		fmt.Fprintf(stderr, "blockcache: inspect %s: no cache on this device: neither superblock copy holds blockcache metadata\n", path)
		return exitError{exitNoMetadata}
	case curErr != nil:
		fmt.Fprintf(stderr, "blockcache: inspect %s: no valid superblock: %v\n", path, curErr)
		return exitError{exitDamaged}
	}
	return nil
}

// entryScan reads the entry area of a cache sector by sector.
type entryScan struct {
	dev bdev.Device
	sb  *metadata.Superblock
}

// scanChunkSectors is how many entry sectors one read fetches.
const scanChunkSectors = 256

// run calls entry for every mapped line and bad for every entry sector that
// cannot be read or decoded (or holds a mapped entry past the last line),
// in sector order, and returns the totals. It stops only when a callback
// fails.
func (s *entryScan) run(entry func(*entryDump) error, bad func(*badSectorDump) error) (entryTotals, error) {
	var tot entryTotals
	g := s.sb.Geometry
	spl := g.SectorsPerLine()
	eps := int64(metadata.EntriesPerSector(spl))
	cores := map[uint16]metadata.CoreRecord{}
	for _, c := range s.sb.Cores {
		cores[c.ID] = c
	}
	var full [2]uint64
	for i := range spl {
		full[i/64] |= 1 << (i % 64)
	}
	buf := make([]byte, scanChunkSectors*metadata.SectorBytes)
	entries := make([]metadata.Entry, eps)
	badSector := func(sector int64, err error) error {
		tot.Bad++
		first := sector * eps
		return bad(&badSectorDump{Sector: sector, Offset: g.EntrySectorOffset(sector), FirstLine: first,
			LastLine: min(first+eps, g.NumLines) - 1, Error: err.Error()})
	}
	for start := int64(0); start < g.EntrySectors; start += scanChunkSectors {
		n := min(scanChunkSectors, g.EntrySectors-start)
		chunk := buf[:n*metadata.SectorBytes]
		chunkErr := s.dev.ReadAt(chunk, g.EntrySectorOffset(start))
		for j := range n {
			sector := start + j
			sb := chunk[j*metadata.SectorBytes : (j+1)*metadata.SectorBytes]
			if chunkErr != nil {
				// Find which sectors of the chunk are unreadable.
				if err := s.dev.ReadAt(sb, g.EntrySectorOffset(sector)); err != nil {
					if err := badSector(sector, fmt.Errorf("read: %w", err)); err != nil {
						return tot, err
					}
					continue
				}
			}
			if err := metadata.DecodeSector(sb, uint32(sector), s.sb.CacheID, spl, entries); err != nil {
				if err := badSector(sector, err); err != nil {
					return tot, err
				}
				continue
			}
			for slot, e := range entries {
				line := sector*eps + int64(slot)
				if !e.Mapped() {
					continue
				}
				if line >= g.NumLines {
					err := fmt.Errorf("%w: slot %d past the last line maps core %d", metadata.ErrCorrupt, slot, e.Core)
					if err := badSector(sector, err); err != nil {
						return tot, err
					}
					break
				}
				d := &entryDump{Line: line, Sector: sector, Slot: slot, Core: e.Core, CoreLine: e.CoreLine,
					Valid: hexMask(e.Valid, spl), Dirty: hexMask(e.Dirty, spl),
					ValidSectors: metadata.Count(e.Valid), DirtySectors: metadata.Count(e.Dirty)}
				d.Problem = entryProblem(e, cores, full, g.LineSize)
				tot.Mapped++
				if d.DirtySectors > 0 {
					tot.Dirty++
				}
				if err := entry(d); err != nil {
					return tot, err
				}
			}
		}
	}
	return tot, nil
}

// entryProblem says what a load would reject in a mapped entry that decoded
// (the checks of ocf's loadEntryLocked that need only the superblock).
func entryProblem(e metadata.Entry, cores map[uint16]metadata.CoreRecord, full [2]uint64, lineSize int64) string {
	c, ok := cores[e.Core]
	switch {
	case !ok && e.Dirty != [2]uint64{}:
		return fmt.Sprintf("dirty data for core %d, which the superblock does not record", e.Core)
	case !ok:
		return fmt.Sprintf("core %d is not recorded in the superblock (a load ignores this clean entry)", e.Core)
	case uint64(e.CoreLine)*uint64(lineSize) >= c.SizeBytes:
		return fmt.Sprintf("core line %d is past the end of core %d", e.CoreLine, e.Core)
	case e.Valid[0]&^full[0] != 0 || e.Valid[1]&^full[1] != 0:
		return "valid sectors beyond the line"
	}
	return ""
}

// hexMask formats a sector mask of a line of spl sectors as spl/4 hex
// digits, sector 0 in the lowest bit.
func hexMask(m [2]uint64, spl int) string {
	if spl > 64 {
		return fmt.Sprintf("%0*x%016x", (spl-64)/4, m[1], m[0])
	}
	return fmt.Sprintf("%0*x", spl/4, m[0])
}

func writeInspectText(w io.Writer, path string, devBytes int64, copies []superblockDump, curErr error, withEntries bool, sc *entryScan) error {
	fmt.Fprintf(w, "Device %s: %d bytes (%s)\n", path, devBytes, humanSize(uint64(devBytes)))
	for _, c := range copies {
		fmt.Fprintln(w)
		if !c.Valid {
			fmt.Fprintf(w, "Superblock copy %s (byte offset %d): INVALID: %s\n", c.Copy, c.Offset, c.Error)
			continue
		}
		state := "valid"
		if c.Current {
			state += ", current"
		}
		fmt.Fprintf(w, "Superblock copy %s (byte offset %d): %s\n", c.Copy, c.Offset, state)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		row := func(k, format string, args ...any) {
			fmt.Fprintf(tw, "  %s\t"+format+"\n", append([]any{k}, args...)...)
		}
		g := c.Geometry
		row("sequence", "%d", c.Seq)
		flags := "not clean: written while the cache ran"
		if c.Clean {
			flags = "clean shutdown"
		}
		row("flags", "%#x (%s)", c.Flags, flags)
		row("cache id", "%s", c.CacheID)
		row("mode", "%s", c.Mode)
		row("line size", "%d bytes (%d sectors)", g.LineSize, g.SectorsPerLine)
		row("lines", "%d", g.NumLines)
		row("entry area", "byte offset %d, %d sectors of %d entries", g.EntryOffset, g.EntrySectors, g.EntriesPerSector)
		row("data area", "byte offset %d", g.DataOffset)
		row("policies", "promotion %d, cleaning %d, seq cutoff %d", c.Promotion, c.Cleaning, c.SeqCutoff)
		row("params", "%s", paramsText(c.Params))
		row("cores", "%d", len(c.Cores))
		for _, co := range c.Cores {
			row(fmt.Sprintf("  core %d", co.ID), "%q, %d bytes (%s), volume %q %s", co.CoreName, co.SizeBytes, humanSize(co.SizeBytes), co.VolumeName, co.VolumeUUID)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	fmt.Fprintln(w)
	if curErr != nil {
		_, err := fmt.Fprintf(w, "Current superblock: none (%v)\n", curErr)
		return err
	}
	var cur *superblockDump
	for i := range copies {
		if copies[i].Current {
			cur = &copies[i]
		}
	}
	fmt.Fprintf(w, "Current superblock: copy %s (sequence %d)\n", cur.Copy, cur.Seq)
	if !withEntries {
		return nil
	}
	g := cur.Geometry
	fmt.Fprintf(w, "\nEntries (geometry of copy %s: %d entry sectors of %d entries, %d lines)\n", cur.Copy, g.EntrySectors, g.EntriesPerSector, g.NumLines)
	lw := max(len("LINE"), len(strconv.FormatInt(g.NumLines-1, 10)))
	sw := max(len("SECTOR"), len(strconv.FormatInt(g.EntrySectors-1, 10)))
	mw := max(len("VALID"), g.SectorsPerLine/4)
	fmt.Fprintf(w, "%-*s  %-*s  %-4s  %-5s  %-10s  %-*s  %-*s  %5s  %5s\n", lw, "LINE", sw, "SECTOR", "SLOT", "CORE", "CORE LINE", mw, "VALID", mw, "DIRTY", "#VAL", "#DIRTY")
	tot, err := sc.run(func(e *entryDump) error {
		_, err := fmt.Fprintf(w, "%-*d  %-*d  %-4d  %-5d  %-10d  %-*s  %-*s  %5d  %5d", lw, e.Line, sw, e.Sector, e.Slot, e.Core, e.CoreLine,
			mw, e.Valid, mw, e.Dirty, e.ValidSectors, e.DirtySectors)
		if err == nil && e.Problem != "" {
			_, err = fmt.Fprintf(w, "  ! %s", e.Problem)
		}
		if err == nil {
			_, err = fmt.Fprintln(w)
		}
		return err
	}, func(b *badSectorDump) error {
		_, err := fmt.Fprintf(w, "!! BAD %s\n", b)
		return err
	})
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%d mapped lines (%d with dirty sectors) in %d entry sectors; %d bad entry sectors\n", tot.Mapped, tot.Dirty, g.EntrySectors, tot.Bad)
	return err
}

// paramsText lists the policy parameters, or says they are all zero (the
// defaults).
func paramsText(p [metadata.NumParams]uint32) string {
	if p == [metadata.NumParams]uint32{} {
		return "all zero (defaults)"
	}
	s := make([]string, len(p))
	for i, v := range p {
		s[i] = strconv.FormatUint(uint64(v), 10)
	}
	return strings.Join(s, " ")
}

// inspectJSON is the part of inspect's JSON before the entries, which are
// streamed.
type inspectJSON struct {
	Device      string           `json:"device"`
	SizeBytes   int64            `json:"size_bytes"`
	Current     *string          `json:"current"` // "A", "B" or null
	Error       string           `json:"error,omitempty"`
	Superblocks []superblockDump `json:"superblocks"`
}

// writeInspectJSON writes one JSON object. The line entries are written as
// they are read, one per line, so that a large cache needs no memory for
// them; bad sectors are gathered and written after them.
func writeInspectJSON(w io.Writer, path string, devBytes int64, copies []superblockDump, curErr error, sc *entryScan) error {
	head := inspectJSON{Device: path, SizeBytes: devBytes, Superblocks: copies}
	for _, c := range copies {
		if c.Current {
			head.Current = &c.Copy
		}
	}
	if curErr != nil {
		head.Error = curErr.Error()
	}
	b, err := json.MarshalIndent(head, "", "  ")
	if err != nil {
		return err
	}
	if sc == nil {
		_, err := fmt.Fprintf(w, "%s\n", b)
		return err
	}
	// Reopen the object to add "entries".
	b = b[:len(b)-len("\n}")]
	g := sc.sb.Geometry
	fmt.Fprintf(w, "%s,\n  \"entries\": {\n    \"entry_sectors\": %d,\n    \"entries_per_sector\": %d,\n    \"lines\": [", b, g.EntrySectors, metadata.EntriesPerSector(g.SectorsPerLine()))
	sep := "\n      "
	var bads []*badSectorDump
	tot, err := sc.run(func(e *entryDump) error {
		b, err := json.Marshal(e)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(w, "%s%s", sep, b)
		sep = ",\n      "
		return err
	}, func(b *badSectorDump) error {
		bads = append(bads, b)
		return nil
	})
	if err != nil {
		return err
	}
	if tot.Mapped > 0 {
		fmt.Fprint(w, "\n    ")
	}
	fmt.Fprint(w, "],\n    \"bad_sectors\": [")
	for i, bad := range bads {
		b, err := json.Marshal(bad)
		if err != nil {
			return err
		}
		if i > 0 {
			fmt.Fprint(w, ",")
		}
		fmt.Fprintf(w, "\n      %s", b)
	}
	if len(bads) > 0 {
		fmt.Fprint(w, "\n    ")
	}
	_, err = fmt.Fprintf(w, "],\n    \"mapped_lines\": %d,\n    \"dirty_lines\": %d\n  }\n}\n", tot.Mapped, tot.Dirty)
	return err
}
