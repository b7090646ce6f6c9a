package ocf

import (
	"errors"
	"fmt"
	"time"

	"blockcache/internal/bdev"
	"blockcache/internal/ocf/metadata"
)

// Probe reads the superblock of a cache device without loading it. It
// returns an error wrapping metadata.ErrNoMetadata when the device holds no
// cache, or naming the damaged region when it holds a damaged one.
func Probe(dev bdev.Device) (*metadata.Superblock, error) {
	sb, _, err := readSuperblock(dev)
	return sb, err
}

// readSuperblock reads and validates both superblock copies. Its errors
// name dev.
func readSuperblock(dev bdev.Device) (sb *metadata.Superblock, damaged, err error) {
	info := dev.Info()
	if info.SizeBytes() < metadata.SuperblockArea {
		return nil, nil, fmt.Errorf("cache device %q: %w (smaller than the superblock area)", info.Name, metadata.ErrNoMetadata)
	}
	buf := make([]byte, metadata.SuperblockArea)
	if err := dev.ReadAt(buf, 0); err != nil {
		return nil, nil, fmt.Errorf("read superblocks: %w", err)
	}
	sb, damaged, err = metadata.Newest(buf[:metadata.SuperblockCopyBytes], buf[metadata.SuperblockCopyBytes:], info.SizeBytes())
	if err != nil {
		return nil, nil, fmt.Errorf("cache device %q: %w", info.Name, err)
	}
	return sb, damaged, nil
}

// LoadReport says what Load found.
type LoadReport struct {
	Superblock *metadata.Superblock
	// Clean is true when the cache was stopped cleanly: everything was
	// loaded as it was, clean lines included.
	Clean bool
	// Lines and DirtyLines count the lines loaded.
	Lines, DirtyLines int
	// DroppedClean counts clean lines not trusted after an unclean stop.
	DroppedClean int
	// Damaged, if not nil, is a superblock copy that failed validation; the
	// other copy was used.
	Damaged error
}

// Load opens the cache held by dev: its line size, mode and cores come from
// the metadata (cfg's are ignored), its lines are rebuilt from the entries.
// After an unclean stop only dirty sectors are kept. The cores recorded are
// present but detached: AddCore with a recorded id attaches the core device
// to its data. Load fails, loading nothing, if any part of the metadata is
// damaged (an error wrapping metadata.ErrCorrupt naming the region) or the
// device holds no cache (metadata.ErrNoMetadata).
func Load(dev bdev.Device, cfg Config) (*Cache, *LoadReport, error) {
	return load(dev, cfg, false)
}

// Verify reads and checks the metadata of a cache device without changing
// it, as Load would see it, and then runs Check on the result: the offline
// `blockcache check`. The cache built is dropped.
func Verify(dev bdev.Device, progress func(op string, done, total int64)) (*LoadReport, error) {
	c, rep, err := load(dev, Config{Progress: progress}, true)
	if err != nil {
		return rep, err
	}
	if errs := c.Check(); len(errs) > 0 {
		return rep, fmt.Errorf("%w: %w", metadata.ErrCorrupt, errors.Join(errs...))
	}
	return rep, nil
}

func load(dev bdev.Device, cfg Config, readOnly bool) (*Cache, *LoadReport, error) {
	sb, damaged, err := readSuperblock(dev)
	if err != nil {
		return nil, nil, fmt.Errorf("load cache: %w", err)
	}
	if Mode(sb.Mode) >= numModes {
		return nil, nil, onDevice("load cache", dev, fmt.Errorf("%w: mode %d", metadata.ErrCorrupt, sb.Mode))
	}
	cfg.LineSize, cfg.Mode, cfg.VolatileMetadata = sb.Geometry.LineSize, Mode(sb.Mode), false
	switch sb.Params[paramVolatileDirty] {
	case 0, 1:
		cfg.VolatileDirtyMetadata = sb.Params[paramVolatileDirty] == 1
	default:
		return nil, nil, onDevice("load cache", dev, fmt.Errorf("%w: superblock parameter %d (volatile dirty metadata) is %d, not 0 or 1",
			metadata.ErrCorrupt, paramVolatileDirty, sb.Params[paramVolatileDirty]))
	}
	cfg.Cleaning = &CleaningParams{
		Kind: CleaningKind(sb.Cleaning),
		ALRU: ALRUParams{
			WakeUp:            time.Duration(sb.Params[paramALRUWakeUp]) * time.Second,
			StalenessTime:     time.Duration(sb.Params[paramALRUStaleness]) * time.Second,
			FlushMaxBuffers:   sb.Params[paramALRUFlushMax],
			ActivityThreshold: time.Duration(sb.Params[paramALRUActivity]) * time.Millisecond,
		},
		ACP: ACPParams{WakeUp: time.Duration(sb.Params[paramACPWakeUp]) * time.Millisecond, FlushMaxBuffers: sb.Params[paramACPFlushMax]},
	}
	cfg.Cleaning.ALRU.MaxDirtyRatio, cfg.Cleaning.MaxInflight = recordedPressure(sb.Params[paramALRUMaxDirty], sb.Params[paramCleanInflight])
	pp := recordedPromotion(sb.Promotion, sb.Params[paramNHitInsertion], sb.Params[paramNHitTrigger])
	cfg.PromotionParams = &pp
	c, err := newCache(dev, cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("load cache: %w", err)
	}
	c.meta.id, c.meta.seq = sb.CacheID, sb.Seq
	if t := sb.Params[paramFallbackPT]; t <= MaxFallbackPTThreshold {
		c.fallback.threshold.Store(t)
	}
	rep := &LoadReport{Superblock: sb, Clean: sb.Clean(), Damaged: damaged}
	for _, r := range sb.Cores {
		if int(r.ID) >= MaxCores {
			return nil, nil, onDevice("load cache", dev, fmt.Errorf("%w: core id %d out of range", metadata.ErrCorrupt, r.ID))
		}
		c.mu.cores[CoreID(r.ID)] = &Core{cache: c, id: CoreID(r.ID), record: r, stats: newCounters()}
		c.mu.cores[CoreID(r.ID)].state.Store(stateRemoved) // detached until AddCore
	}
	if err := c.loadEntries(rep); err != nil {
		return nil, nil, onDevice("load cache", dev, err)
	}
	if readOnly {
		return c, rep, nil
	}
	// From now on the cache runs: mark it not clean, in both copies. No
	// one else has the cache yet; writeSuperblock checks settings is held.
	c.settings.Lock()
	defer c.settings.Unlock()
	if err := c.writeSuperblock(false); err != nil {
		return nil, nil, onDevice("load cache", dev, err)
	}
	return c, rep, nil
}

// loadEntries reads the entry area and rebuilds lines, mapping, lists and
// per-core counts.
func (c *Cache) loadEntries(rep *LoadReport) error {
	eps := c.layout.perSector
	total := c.layout.EntrySectors
	const chunk = syncChunkSectors
	buf := make([]byte, chunk*metadata.SectorBytes)
	entries := make([]metadata.Entry, eps)
	var dropped []int // entry sectors holding dropped clean lines
	c.mu.Lock()
	defer c.mu.Unlock()
	for s := int64(0); s < total; s += chunk {
		n := min(chunk, total-s)
		if err := c.dev.ReadAt(buf[:n*metadata.SectorBytes], c.layout.EntrySectorOffset(s)); err != nil {
			return fmt.Errorf("read entry sectors %d..%d: %w", s, s+n-1, err)
		}
		for j := range n {
			sector := s + j
			if err := metadata.DecodeSector(buf[j*metadata.SectorBytes:(j+1)*metadata.SectorBytes], uint32(sector), c.meta.id, c.sectorsPerLine, entries); err != nil {
				first := sector * int64(eps)
				return fmt.Errorf("metadata region: entry sector %d (byte offset %d, lines %d..%d): %w",
					sector, c.layout.EntrySectorOffset(sector), first, min(first+int64(eps), int64(c.layout.numLines))-1, err)
			}
			for slot := range eps {
				i := int(sector)*eps + slot
				e := entries[slot]
				if i >= c.layout.numLines {
					if e.Mapped() {
						return fmt.Errorf("metadata region: entry sector %d: slot %d past the last line maps core %d: %w", sector, slot, e.Core, metadata.ErrCorrupt)
					}
					continue
				}
				before := rep.DroppedClean
				if err := c.loadEntryLocked(lineIdx(i), e, rep); err != nil {
					return fmt.Errorf("metadata region: entry sector %d, line %d: %w", sector, i, err)
				}
				if rep.DroppedClean != before && (len(dropped) == 0 || dropped[len(dropped)-1] != int(sector)) {
					dropped = append(dropped, int(sector))
				}
			}
		}
		c.reportProgress("load", s+n, total)
	}
	// What was loaded is what the device holds; only the entries of
	// dropped clean lines differ, to be rewritten in time.
	clear(c.mu.metaDirty)
	clear(c.meta.changed)
	c.mu.metaUrgent = false
	c.meta.durable.Store(c.meta.urgentSeq.Load())
	for _, s := range dropped {
		c.mu.metaDirty[s/64] |= 1 << (s % 64)
		c.meta.changed[s] = allSlots
	}
	return nil
}

// loadEntryLocked installs line i from its durable entry e.
func (c *Cache) loadEntryLocked(i lineIdx, e metadata.Entry, rep *LoadReport) error {
	if !e.Mapped() {
		return nil
	}
	co := c.mu.cores[CoreID(e.Core)]
	if co == nil {
		// A core added after the superblock copy we loaded was written
		// cannot have dirty data yet; anything else is damage.
		if e.Dirty != [2]uint64{} {
			return fmt.Errorf("%w: dirty data for core %d, which the superblock does not record", metadata.ErrCorrupt, e.Core)
		}
		return nil
	}
	if uint64(e.CoreLine)*uint64(c.layout.lineSize) >= co.record.SizeBytes {
		return fmt.Errorf("%w: core %d line %d is past the core's end", metadata.ErrCorrupt, e.Core, e.CoreLine)
	}
	full := rangeMask(0, c.sectorsPerLine)
	valid, dirty := sectorMask(e.Valid), sectorMask(e.Dirty)
	if !full.contains(valid) {
		return fmt.Errorf("%w: sectors beyond the line", metadata.ErrCorrupt)
	}
	if !rep.Clean {
		// Only dirty sectors survive an unclean stop.
		if dirty.empty() {
			if !valid.empty() {
				rep.DroppedClean++
			}
			return nil
		}
		valid = dirty
	}
	if valid.empty() {
		return nil
	}
	if c.mu.mapping.lookup(c.mu.lines, co.id, e.CoreLine) != noLine {
		return fmt.Errorf("%w: core %d line %d mapped twice", metadata.ErrCorrupt, e.Core, e.CoreLine)
	}
	c.mu.lists.remove(c.mu.lines, i)
	ln := &c.mu.lines[i]
	ln.setID(co.id, e.CoreLine)
	c.mu.mapping.insert(c.mu.lines, i)
	c.mu.lists.pushFront(c.mu.lines, listClean, i)
	co.occupied++
	c.setMasksLocked(i, valid, dirty)
	ln.setDurableDirty(!dirty.empty())
	rep.Lines++
	if !dirty.empty() {
		rep.DirtyLines++
	}
	return nil
}
