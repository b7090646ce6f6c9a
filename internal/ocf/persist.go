package ocf

import (
	"errors"
	"fmt"
	mbits "math/bits"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"blockcache/internal/invariants"
	"blockcache/internal/ocf/metadata"
)

// Persistent metadata (format: package metadata).
//
// The in-memory line state is the truth; the cache device holds a copy that
// is brought up to date by syncMetadata. Every change marks its line's entry
// sector; changes to what is dirty (and unmappings of lines whose durable
// entry claims dirty data) are urgent. By default a write whose own change
// is urgent returns only once that change is durable (group commit,
// commit.go); with Config.VolatileDirtyMetadata only a volume flush or FUA
// write persists urgent changes. Other changes (clean fills, clean
// mappings) are written with the next sync, at the latest at a clean stop.
//
// Three rules make the copy safe to load after a crash:
//   - An entry is encoded only after the data it describes was written, and
//     the cache device is flushed between encoding and writing the entry, so
//     a durable entry never claims data that is not durable.
//   - A line whose durable entry claims dirty sectors (line.durableDirty) is
//     never given to another core line until an entry saying otherwise is
//     durable (unmapped such lines wait in limbo).
//   - After an unclean stop only dirty sectors are trusted: a clean line may
//     have been reused, or its core copy rewritten, after its entry was
//     written (the trap of durability.md), so clean sectors are dropped.
//
// Lock order: stripes, then meta.sync, then Cache.mu.

// persistState is the engine's side of the metadata.
type persistState struct {
	volatile bool      // metadata in memory only; nothing written
	id       uuid.UUID // cache id, in the superblock and every entry sector
	progress func(op string, done, total int64)

	// volatileDirty leaves urgent changes in memory until a flush or FUA
	// write (Config.VolatileDirtyMetadata); fixed at New or Load.
	volatileDirty bool

	// sync serialises metadata writes and guards seq.
	sync sync.Mutex
	seq  uint64    // sequence number of the newest superblock written
	bufs sync.Pool // *[]byte of syncChunkSectors sectors
	// sectors, masks and durableDirty are syncRound's and
	// writeEntrySectors' scratch, kept between rounds. Guarded by sync.
	sectors      []int
	masks        []uint64
	durableDirty [syncChunkSectors]uint64
	// images keeps the last encoding of recently written entry sectors,
	// sector s in images[s%len(images)] when imageOf says so, so that a
	// round re-encodes only the slots that changed: the encoding of every
	// slot its sector's changed mask does not name is the slot's line as
	// it is now. Guarded by sync.
	images  [][metadata.SectorBytes]byte
	imageOf []int32

	// changed has, per entry sector, a bit per slot whose line changed
	// since a round took the sector (markSectorLocked); every bit when the
	// device's copy cannot be trusted to hold the rest. Written under
	// Cache.mu.
	changed []uint64

	// urgentSeq numbers urgent changes: it is the number of the newest.
	// Incremented under Cache.mu; read without it.
	urgentSeq atomic.Uint64
	// durable is the number of the newest urgent change known to be on the
	// device, with every change before it. Stored under sync, so it never
	// goes back.
	durable atomic.Uint64
	// commit is where writers meet to share sync rounds (commit.go).
	commit commitState
}

// Slots of the superblock's policy parameters.
const (
	paramFallbackPT    = iota // fallback pass-through error threshold
	paramNHitInsertion        // nhit insertion threshold
	paramNHitTrigger          // nhit trigger threshold, percent
	paramALRUWakeUp           // seconds
	paramALRUStaleness        // seconds
	paramALRUFlushMax         // lines
	paramALRUActivity         // milliseconds
	paramACPWakeUp            // milliseconds
	paramACPFlushMax          // lines
	paramALRUMaxDirty         // percent + 1; 0 (written before the slot existed): the default
	paramCleanInflight        // lines; 0 (written before the slot existed): the default
)

// paramVolatileDirty is the slot of Config.VolatileDirtyMetadata: 0 (the
// default, and what superblocks written before the slot existed hold) or 1.
// It is the last slot, apart from the policies' growing list.
const paramVolatileDirty = metadata.NumParams - 1

// syncChunkSectors bounds one encode-flush-write round of syncMetadata.
const syncChunkSectors = 2048

// maxSectorImages bounds persistState.images: 128 KiB a cache.
const maxSectorImages = 256

// allSlots marks every slot of an entry sector changed.
const allSlots = ^uint64(0)

// init sizes the metadata state for a device with entrySectors entry
// sectors.
func (p *persistState) init(entrySectors int64) {
	p.bufs.New = func() any { b := make([]byte, syncChunkSectors*metadata.SectorBytes); return &b }
	p.commit.ended.L = &p.commit.mu
	p.changed = make([]uint64, entrySectors)
	n := min(entrySectors, maxSectorImages)
	p.images = make([][metadata.SectorBytes]byte, n)
	p.imageOf = make([]int32, n)
	for k := range p.imageOf {
		p.imageOf[k] = -1
	}
}

// markSectorLocked marks line i's entry sector for the next metadata write;
// urgent means a flush or FUA must write it, and numbers the change.
func (c *Cache) markSectorLocked(i lineIdx, urgent bool) {
	if c.meta.volatile {
		return
	}
	s := c.layout.sectorOf(i)
	c.mu.metaDirty[s/64] |= 1 << (s % 64)
	c.meta.changed[s] |= 1 << (int(i) - s*c.layout.perSector)
	if urgent {
		c.mu.metaUrgent = true
		c.meta.urgentSeq.Add(1)
	}
}

// syncMetadata writes the marked entry sectors when an urgent change waits
// (or, with all, whatever is marked), making every acknowledged change to
// dirty data durable. It flushes the cache device in any case, so data
// written before it is durable too.
func (c *Cache) syncMetadata(all bool) error {
	_, err := c.syncRound(all, true)
	return err
}

// syncRound is syncMetadata; with !flush it does no IO at all when no
// urgent change waits. It returns the number of the newest urgent change
// it took, durable unless it failed.
func (c *Cache) syncRound(all, flush bool) (taken uint64, err error) {
	if c.meta.volatile {
		return 0, c.dev.Flush()
	}
	c.meta.sync.Lock()
	defer c.meta.sync.Unlock()
	c.mu.Lock()
	taken = c.meta.urgentSeq.Load()
	if !c.mu.metaUrgent && !all {
		c.mu.Unlock()
		// No change waits and no other round writes any (this one holds
		// sync): every urgent change so far is durable.
		c.meta.durable.Store(taken)
		if !flush {
			return taken, nil
		}
		return taken, c.dev.Flush()
	}
	sectors, masks := c.meta.sectors[:0], c.meta.masks[:0]
	for w, bits := range c.mu.metaDirty {
		for ; bits != 0; bits &= bits - 1 {
			s := w*64 + mbits.TrailingZeros64(bits)
			sectors, masks = append(sectors, s), append(masks, c.meta.changed[s])
			c.meta.changed[s] = 0
		}
	}
	c.meta.sectors, c.meta.masks = sectors, masks
	c.mu.metaUrgent = false
	clear(c.mu.metaDirty)
	c.mu.metaSyncing = true
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.mu.metaSyncing = false
		c.mu.Unlock()
	}()

	if len(sectors) == 0 {
		if err := c.dev.Flush(); err != nil {
			return taken, err
		}
		c.meta.durable.Store(taken)
		return taken, nil
	}
	for start := 0; start < len(sectors); start += syncChunkSectors {
		end := min(start+syncChunkSectors, len(sectors))
		if err := c.writeEntrySectors(sectors[start:end], masks[start:end]); err != nil {
			// What the device holds of these sectors is unknown now: they
			// are encoded whole next time.
			c.mu.Lock()
			for _, s := range sectors[start:] {
				c.mu.metaDirty[s/64] |= 1 << (s % 64)
				c.meta.changed[s] = allSlots
			}
			c.mu.metaUrgent = true
			c.mu.Unlock()
			return taken, fmt.Errorf("write cache metadata: %w", err)
		}
	}
	c.meta.durable.Store(taken)
	return taken, nil
}

// writeEntrySectors encodes sectors (ascending), re-encoding of a sector
// whose last encoding images keeps only the slots its mask names, flushes
// the cache device so the data their entries describe is durable, writes
// them durably (FUA, or a flush after), and records what is now durable.
func (c *Cache) writeEntrySectors(sectors []int, masks []uint64) error {
	eps := c.layout.perSector
	spl := c.sectorsPerLine
	bufp := c.meta.bufs.Get().(*[]byte)
	defer c.meta.bufs.Put(bufp)
	buf := (*bufp)[:len(sectors)*metadata.SectorBytes]
	// Per sector, a bit per slot encoded: its line was dirty then.
	durableDirty := c.meta.durableDirty[:len(sectors)]
	clear(durableDirty)

	// A sector without an image, or all of whose slots changed, is
	// encoded whole; its mask says every slot.
	for j, s := range sectors {
		n := min(eps, c.layout.numLines-s*eps)
		masks[j] &= 1<<n - 1
		if k := s % len(c.meta.images); c.meta.imageOf[k] == int32(s) && masks[j] != 1<<n-1 {
			copy(buf[j*metadata.SectorBytes:], c.meta.images[k][:])
		} else {
			masks[j] = 1<<n - 1
		}
	}
	c.mu.Lock()
	for j, s := range sectors {
		first := s * eps
		b := buf[j*metadata.SectorBytes:]
		var w metadata.SectorWriter
		if n := min(eps, c.layout.numLines-first); masks[j] == 1<<n-1 {
			w = metadata.NewSector(b, uint32(s), c.meta.id, spl)
		} else {
			w = metadata.EditSector(b, uint32(s), spl)
		}
		for m := masks[j]; m != 0; m &= m - 1 {
			slot := mbits.TrailingZeros64(m)
			// The key once: it holds list, core and core line.
			ln := &c.mu.lines[first+slot]
			k := ln.key.Load()
			e := metadata.Unmapped
			if id := listID(k >> keyListShift); id == listClean || id == listDirty {
				e = metadata.Entry{Core: uint16(k >> keyCoreShift), CoreLine: uint32(k & keyLineMask), Valid: ln.validMask(), Dirty: ln.dirty}
			}
			if err := w.Put(slot, &e); err != nil {
				c.mu.Unlock()
				return err // the in-memory state breaks an invariant
			}
			if !e.Mapped() || sectorMask(e.Dirty).empty() {
				continue
			}
			durableDirty[j] |= 1 << slot
		}
		w.Seal()
	}
	c.mu.Unlock()

	if err := c.dev.Flush(); err != nil {
		return err
	}
	// One run of sectors (a commit's usual round) is written with FUA,
	// which a device may do more cheaply than a write and a flush; several
	// are written, then flushed once.
	oneRun := sectors[len(sectors)-1]-sectors[0] == len(sectors)-1
	for j := 0; j < len(sectors); {
		k := j + 1
		for k < len(sectors) && sectors[k] == sectors[k-1]+1 {
			k++
		}
		off := c.layout.EntrySectorOffset(int64(sectors[j]))
		if err := c.dev.WriteAt(buf[j*metadata.SectorBytes:k*metadata.SectorBytes], off, oneRun); err != nil {
			return err
		}
		j = k
	}
	if !oneRun {
		if err := c.dev.Flush(); err != nil {
			return err
		}
	}

	for j, s := range sectors {
		k := s % len(c.meta.images)
		copy(c.meta.images[k][:], buf[j*metadata.SectorBytes:])
		c.meta.imageOf[k] = int32(s)
	}

	// The slots not encoded hold what they held: their lines' flags stand.
	c.mu.Lock()
	defer c.mu.Unlock()
	for j, s := range sectors {
		for m := masks[j]; m != 0; m &= m - 1 {
			slot := mbits.TrailingZeros64(m)
			i := lineIdx(s*eps + slot)
			ln := &c.mu.lines[i]
			k := ln.key.Load()
			durable := durableDirty[j]&(1<<slot) != 0
			if (k&keyDurableBit != 0) == durable {
				continue
			}
			ln.setDurableDirty(durable)
			if !durable && listID(k>>keyListShift) == listLimbo {
				c.mu.lists.remove(c.mu.lines, i)
				c.mu.lists.pushFront(c.mu.lines, listFree, i)
			}
		}
	}
	return nil
}

// superblockLocked builds the superblock of the cache as it is. The caller
// holds meta.sync.
func (c *Cache) superblockLocked(clean bool) *metadata.Superblock {
	sb := &metadata.Superblock{CacheID: c.meta.id, Geometry: c.layout.Geometry, Mode: uint8(c.Mode())}
	sb.Params[paramFallbackPT] = c.fallback.threshold.Load()
	pp := c.Promotion()
	sb.Promotion = uint8(pp.Kind)
	sb.Params[paramNHitInsertion], sb.Params[paramNHitTrigger] = pp.InsertionThreshold, pp.TriggerThreshold
	cp := c.Cleaning()
	sb.Cleaning = uint8(cp.Kind)
	sb.Params[paramALRUWakeUp] = uint32(cp.ALRU.WakeUp / time.Second)
	sb.Params[paramALRUStaleness] = uint32(cp.ALRU.StalenessTime / time.Second)
	sb.Params[paramALRUFlushMax] = cp.ALRU.FlushMaxBuffers
	sb.Params[paramALRUActivity] = uint32(cp.ALRU.ActivityThreshold / time.Millisecond)
	sb.Params[paramACPWakeUp] = uint32(cp.ACP.WakeUp / time.Millisecond)
	sb.Params[paramACPFlushMax] = cp.ACP.FlushMaxBuffers
	sb.Params[paramALRUMaxDirty] = cp.ALRU.MaxDirtyRatio + 1
	sb.Params[paramCleanInflight] = cp.MaxInflight
	if c.meta.volatileDirty {
		sb.Params[paramVolatileDirty] = 1
	}
	if clean {
		sb.Flags |= metadata.FlagClean
	}
	c.mu.Lock()
	for _, co := range c.mu.cores {
		sb.Cores = append(sb.Cores, co.record)
	}
	c.mu.Unlock()
	slices.SortFunc(sb.Cores, func(a, b metadata.CoreRecord) int { return int(a.ID) - int(b.ID) })
	return sb
}

// writeSuperblock writes the superblock: both copies, one after the other,
// so that either copy alone describes the cache after a crash; a clean mark
// at stop goes to one copy only (the other, older, copy then says "not
// clean", which costs a recovery scan if it is ever used, nothing more).
// The caller holds settings (see changeRecorded).
func (c *Cache) writeSuperblock(clean bool) error {
	if invariants.Enabled && c.settings.TryLock() {
		c.settings.Unlock()
		panic(errors.New("ocf: superblock written without settings held"))
	}
	if c.meta.volatile {
		return nil
	}
	c.meta.sync.Lock()
	defer c.meta.sync.Unlock()
	copies := 2
	if clean {
		copies = 1
	}
	for range copies {
		sb := c.superblockLocked(clean)
		sb.Seq = c.meta.seq + 1
		b, err := sb.Encode()
		if err != nil {
			return fmt.Errorf("write superblock: %w", err)
		}
		b = append(b, make([]byte, (metadata.SectorBytes-len(b)%metadata.SectorBytes)%metadata.SectorBytes)...)
		off := int64(sb.Seq%2) * metadata.SuperblockCopyBytes
		if err := c.dev.WriteAt(b, off, true); err != nil {
			return fmt.Errorf("write superblock copy %d: %w", sb.Seq%2, err)
		}
		c.meta.seq = sb.Seq
	}
	return nil
}

// initMetadata writes a fresh metadata area: every entry unmapped, then the
// superblock. Its errors are the device's; New says what they were for.
func (c *Cache) initMetadata() error {
	if c.meta.volatile {
		return nil
	}
	total := c.layout.EntrySectors
	const chunk = syncChunkSectors
	buf := make([]byte, chunk*metadata.SectorBytes)
	for s := int64(0); s < total; s += chunk {
		n := min(chunk, total-s)
		for j := range n {
			w := metadata.NewSector(buf[j*metadata.SectorBytes:], uint32(s+j), c.meta.id, c.sectorsPerLine)
			w.Seal()
		}
		if err := c.dev.WriteAt(buf[:n*metadata.SectorBytes], c.layout.EntrySectorOffset(s), false); err != nil {
			return err
		}
		c.reportProgress("init", s+n, total)
	}
	if err := c.dev.Flush(); err != nil {
		return err
	}
	c.settings.Lock() // no one else has the cache yet; writeSuperblock checks it
	defer c.settings.Unlock()
	return c.writeSuperblock(false)
}

func (c *Cache) reportProgress(op string, done, total int64) {
	if c.meta.progress != nil {
		c.meta.progress(op, done, total)
	}
}
