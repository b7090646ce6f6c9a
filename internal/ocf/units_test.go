package ocf

import (
	"blockcache/internal/ocf/metadata"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
	"unsafe"
)

// Unit tests of the engine's building blocks: sector masks, the mapping
// table, the line lists, the stripe locks and the device layout.

func TestRangeMask(t *testing.T) {
	all := ^uint64(0)
	for _, tc := range []struct {
		from, to int
		want     sectorMask
	}{
		{0, 0, sectorMask{}},
		{5, 5, sectorMask{}},
		{64, 64, sectorMask{}},
		{128, 128, sectorMask{}},
		{0, 1, sectorMask{1, 0}},
		{0, 8, sectorMask{0xff, 0}},
		{3, 5, sectorMask{0b11000, 0}},
		{63, 64, sectorMask{1 << 63, 0}},
		{0, 63, sectorMask{all >> 1, 0}},
		{0, 64, sectorMask{all, 0}},
		{63, 65, sectorMask{1 << 63, 1}},
		{64, 65, sectorMask{0, 1}},
		{64, 127, sectorMask{0, all >> 1}},
		{64, 128, sectorMask{0, all}},
		{127, 128, sectorMask{0, 1 << 63}},
		{1, 127, sectorMask{all &^ 1, all >> 1}},
		{0, 128, sectorMask{all, all}},
	} {
		if got := rangeMask(tc.from, tc.to); got != tc.want {
			t.Errorf("rangeMask(%d, %d) = %#x, want %#x", tc.from, tc.to, got, tc.want)
		}
		if got, want := rangeMask(tc.from, tc.to).count(), tc.to-tc.from; got != want {
			t.Errorf("rangeMask(%d, %d).count() = %d, want %d", tc.from, tc.to, got, want)
		}
	}
	// Every bit of every range agrees with has().
	for from := 0; from <= 128; from++ {
		for to := from; to <= 128; to++ {
			m := rangeMask(from, to)
			for i := range 128 {
				if m.has(i) != (i >= from && i < to) {
					t.Fatalf("rangeMask(%d, %d).has(%d) = %v", from, to, i, m.has(i))
				}
			}
		}
	}
}

func TestMaskOps(t *testing.T) {
	a, b := rangeMask(0, 70), rangeMask(60, 128)
	if got := a.and(b); got != rangeMask(60, 70) {
		t.Errorf("and = %#x", got)
	}
	if got := a.or(b); got != rangeMask(0, 128) {
		t.Errorf("or = %#x", got)
	}
	if got := a.andNot(b); got != rangeMask(0, 60) {
		t.Errorf("andNot = %#x", got)
	}
	if !(sectorMask{}).empty() || rangeMask(127, 128).empty() || rangeMask(0, 1).empty() {
		t.Error("empty() wrong")
	}
	for _, tc := range []struct {
		m, o sectorMask
		want bool
	}{
		{sectorMask{}, sectorMask{}, true},
		{rangeMask(0, 128), rangeMask(0, 128), true},
		{rangeMask(0, 128), rangeMask(63, 65), true},
		{rangeMask(0, 64), rangeMask(0, 65), false},
		{rangeMask(0, 64), rangeMask(63, 64), true},
		{rangeMask(64, 128), rangeMask(63, 64), false},
		{rangeMask(64, 128), rangeMask(127, 128), true},
		{rangeMask(0, 127), rangeMask(127, 128), false},
		{sectorMask{}, rangeMask(0, 1), false},
		{rangeMask(0, 1), sectorMask{}, true},
	} {
		if got := tc.m.contains(tc.o); got != tc.want {
			t.Errorf("%#x.contains(%#x) = %v, want %v", tc.m, tc.o, got, tc.want)
		}
	}
}

func TestNextRun(t *testing.T) {
	two := rangeMask(3, 5).or(rangeMask(63, 65)).or(rangeMask(127, 128))
	for _, tc := range []struct {
		m           sectorMask
		from, limit int
		start, end  int
		name        string
	}{
		{sectorMask{}, 0, 128, -1, -1, "empty"},
		{sectorMask{}, 0, 8, -1, -1, "empty, small line"},
		{rangeMask(0, 128), 0, 128, 0, 128, "full"},
		{rangeMask(0, 128), 0, 8, 0, 8, "full, limit 8"},
		{rangeMask(0, 128), 127, 128, 127, 128, "last sector"},
		{rangeMask(0, 128), 128, 128, -1, -1, "from the limit"},
		{two, 0, 128, 3, 5, "first run"},
		{two, 5, 128, 63, 65, "run across the word boundary"},
		{two, 64, 128, 64, 65, "from inside a run"},
		{two, 63, 64, 63, 64, "run cut by the limit"},
		{two, 65, 128, 127, 128, "run at the end"},
		{two, 65, 127, -1, -1, "run beyond the limit"},
		{rangeMask(0, 64), 0, 128, 0, 64, "first word full"},
		{rangeMask(64, 128), 0, 128, 64, 128, "second word full"},
		{rangeMask(8, 16), 0, 8, -1, -1, "set bits beyond a 4K line's limit"},
	} {
		s, e := tc.m.nextRun(tc.from, tc.limit)
		if s != tc.start || e != tc.end {
			t.Errorf("%s: nextRun(%d, %d) = [%d, %d), want [%d, %d)", tc.name, tc.from, tc.limit, s, e, tc.start, tc.end)
		}
	}
	// Walking the runs of a random mask rebuilds it.
	r := rand.New(rand.NewPCG(1, 2))
	for range 1000 {
		m := sectorMask{r.Uint64() & r.Uint64(), r.Uint64() | r.Uint64()}
		var rebuilt sectorMask
		prevEnd := -1
		for s := 0; ; {
			s0, s1 := m.nextRun(s, 128)
			if s0 < 0 {
				break
			}
			if s0 <= prevEnd || s1 <= s0 {
				t.Fatalf("runs of %#x not ascending and disjoint: [%d, %d) after end %d", m, s0, s1, prevEnd)
			}
			if s1 < 128 && m.has(s1) {
				t.Fatalf("run [%d, %d) of %#x stops before a set sector", s0, s1, m)
			}
			rebuilt, prevEnd, s = rebuilt.or(rangeMask(s0, s1)), s1, s1
		}
		if rebuilt != m {
			t.Fatalf("runs of %#x rebuild %#x", m, rebuilt)
		}
	}
}

// unitLines returns n unmapped lines as Cache.New leaves them.
func unitLines(n int) []line {
	lines := make([]line, n)
	for i := range lines {
		lines[i].hashNext.Store(int32(noLine))
		lines[i].prev, lines[i].next = noLine, noLine
	}
	return lines
}

func TestMappingCollisions(t *testing.T) {
	for _, size := range []int{1, 2, 7, 64} {
		t.Run(fmt.Sprintf("lines=%d", size), func(t *testing.T) {
			m := newMapping(size)
			if n := len(m.buckets); n < size || n&(n-1) != 0 {
				t.Fatalf("%d buckets for %d lines, want a power of two ≥ lines", n, size)
			}
			lines := unitLines(size)
			// Keys that all land in bucket b, so the lines chain: found by
			// search (with one bucket everything collides).
			b := m.bucket(lineKey(0, 0))
			var keys [][2]uint32 // core, coreLine
			for k := uint32(0); len(keys) < size; k++ {
				for core := range uint32(3) {
					if len(keys) < size && m.bucket(lineKey(CoreID(core), k)) == b {
						keys = append(keys, [2]uint32{core, k})
					}
				}
			}
			for i, k := range keys {
				lines[i].setID(CoreID(k[0]), k[1])
				m.insert(lines, lineIdx(i))
			}
			check := func(present map[int]bool) {
				t.Helper()
				for i, k := range keys {
					got := m.lookup(lines, CoreID(k[0]), k[1])
					want := noLine
					if present[i] {
						want = lineIdx(i)
					}
					if got != want {
						t.Fatalf("lookup(core %d, line %d) = %d, want %d (present %v)", k[0], k[1], got, want, present)
					}
				}
				// Same core line on another core, and another line of the
				// same core, are not found.
				for _, k := range keys {
					if i := m.lookup(lines, CoreID(k[0]+10), k[1]); i != noLine {
						t.Fatalf("lookup of core %d line %d found line %d", k[0]+10, k[1], i)
					}
				}
			}
			present := map[int]bool{}
			for i := range keys {
				present[i] = true
			}
			check(present)
			// Remove from the middle, the head (last inserted) and the tail
			// of the chain, then everything; re-insert one.
			order := []int{size / 2, size - 1, 0}
			for i := range size {
				if !slices.Contains(order, i) {
					order = append(order, i)
				}
			}
			for _, i := range order {
				if !present[i] {
					continue
				}
				m.remove(lines, lineIdx(i))
				delete(present, i)
				check(present)
			}
			for b := range m.buckets {
				if h := lineIdx(m.buckets[b].Load()); h != noLine {
					t.Fatalf("bucket %d not empty after removing every line: head %d", b, h)
				}
			}
			m.insert(lines, 0)
			present[0] = true
			check(present)
			// Removing a line that is not in the table is harmless.
			if size > 1 {
				m.remove(lines, 1)
				check(present)
			}
		})
	}
}

// walkList returns the lines of list id from head to tail, checking the links.
func walkList(t *testing.T, ls *lists, lines []line, id listID) []lineIdx {
	t.Helper()
	var out []lineIdx
	prev := noLine
	for i := ls[id].head; i != noLine; i = lines[i].next {
		if lines[i].prev != prev || lines[i].list() != id {
			t.Fatalf("list %d: line %d has prev %d list %d, want prev %d", id, i, lines[i].prev, lines[i].list(), prev)
		}
		out = append(out, i)
		prev = i
		if len(out) > len(lines) {
			t.Fatalf("list %d loops", id)
		}
	}
	if ls[id].tail != prev || ls[id].n != len(out) {
		t.Fatalf("list %d: tail %d n %d, walked %v", id, ls[id].tail, ls[id].n, out)
	}
	return out
}

func TestLineLists(t *testing.T) {
	lines := unitLines(6)
	var ls lists
	ls.init()
	for id := range numLists {
		if got := walkList(t, &ls, lines, id); len(got) != 0 {
			t.Fatalf("new list %d holds %v", id, got)
		}
	}
	for i := range lineIdx(6) {
		ls.pushFront(lines, listFree, i)
	}
	want := func(id listID, idx ...lineIdx) {
		t.Helper()
		if got := walkList(t, &ls, lines, id); !slices.Equal(got, idx) {
			t.Fatalf("list %d = %v, want %v", id, got, idx)
		}
	}
	want(listFree, 5, 4, 3, 2, 1, 0)
	ls.remove(lines, 3) // middle
	ls.pushFront(lines, listClean, 3)
	want(listFree, 5, 4, 2, 1, 0)
	want(listClean, 3)
	ls.remove(lines, 5) // head
	ls.remove(lines, 0) // tail
	want(listFree, 4, 2, 1)
	ls.pushFront(lines, listDirty, 0)
	ls.pushFront(lines, listDirty, 5)
	want(listDirty, 5, 0)
	ls.moveToFront(lines, listDirty, 0) // LRU touch of the tail
	want(listDirty, 0, 5)
	ls.moveToFront(lines, listDirty, 0) // already at the head
	want(listDirty, 0, 5)
	ls.moveToFront(lines, listClean, 5) // dirty -> clean
	want(listDirty, 0)
	want(listClean, 5, 3)
	ls.moveToFront(lines, listClean, 1) // free -> clean
	want(listFree, 4, 2)
	want(listClean, 1, 5, 3)
	ls.remove(lines, 0) // the only line
	want(listDirty)
	ls.remove(lines, 3)
	ls.remove(lines, 1)
	ls.remove(lines, 5)
	want(listClean)
	ls.remove(lines, 2)
	ls.remove(lines, 4)
	want(listFree)
}

func TestStripesSize(t *testing.T) {
	for _, tc := range []struct{ lines, want int }{
		{1, 64}, {64, 64}, {65, 128}, {1000, 1024}, {4096, 4096}, {1 << 20, 4096},
	} {
		s := newStripes(tc.lines)
		if len(s.locks) != tc.want || s.mask != uint64(tc.want-1) {
			t.Errorf("newStripes(%d): %d locks mask %#x, want %d", tc.lines, len(s.locks), s.mask, tc.want)
		}
	}
}

func TestStripesSpan(t *testing.T) {
	s := newStripes(1) // 64 stripes
	type span struct{ a0, a1, b0, b1 int }
	for _, tc := range []struct {
		core     CoreID
		first, n uint64
		want     span
	}{
		{0, 0, 1, span{0, 1, 0, 0}},
		{0, 10, 5, span{10, 15, 0, 0}},
		{0, 62, 2, span{62, 64, 0, 0}},       // ends exactly at the last stripe
		{0, 62, 3, span{0, 1, 62, 64}},       // wraps by one
		{0, 60, 10, span{0, 6, 60, 64}},      // wraps
		{0, 64 + 60, 10, span{0, 6, 60, 64}}, // same stripes one lap later
		{0, 0, 64, span{0, 64, 0, 0}},        // exactly all
		{0, 5, 64, span{0, 64, 0, 0}},        // all, unaligned
		{0, 5, 1000, span{0, 64, 0, 0}},      // more than all
		{1, 0, 1, span{coreSkew & 63, coreSkew&63 + 1, 0, 0}},
	} {
		a0, a1, b0, b1 := s.span(tc.core, tc.first, tc.n)
		if got := (span{a0, a1, b0, b1}); got != tc.want {
			t.Errorf("span(core %d, %d, %d) = %v, want %v", tc.core, tc.first, tc.n, got, tc.want)
		}
		// The ranges are ascending, disjoint, and cover min(n, 64) stripes,
		// among them every line's own stripe.
		if a0 > a1 || b0 > b1 || (b1 > b0 && a1 > b0) {
			t.Errorf("span(core %d, %d, %d) ranges not ascending: %v", tc.core, tc.first, tc.n, span{a0, a1, b0, b1})
		}
		if got := (a1 - a0) + (b1 - b0); got != int(min(tc.n, 64)) {
			t.Errorf("span(core %d, %d, %d) covers %d stripes", tc.core, tc.first, tc.n, got)
		}
		for l := tc.first; l < tc.first+min(tc.n, 64); l++ {
			i := s.index(tc.core, l)
			if !(i >= a0 && i < a1) && !(i >= b0 && i < b1) {
				t.Errorf("span(core %d, %d, %d) misses line %d's stripe %d", tc.core, tc.first, tc.n, l, i)
			}
		}
	}
}

// lockedStripes reports, for each stripe, whether someone holds it (in any
// mode), probing with TryLock.
func lockedStripes(s *stripes) []bool {
	out := make([]bool, len(s.locks))
	for i := range s.locks {
		if s.locks[i].TryLock() {
			s.locks[i].Unlock()
		} else {
			out[i] = true
		}
	}
	return out
}

// TestStripesLockAscending: a wrapping range is locked in ascending stripe
// order (0..5 before 60..63), so a holder of stripe 2 blocks the locker after
// 0 and 1 and before everything else; then the whole set, shared or
// exclusive, is held until unlockRange.
func TestStripesLockAscending(t *testing.T) {
	for _, exclusive := range []bool{true, false} {
		t.Run(fmt.Sprintf("exclusive=%v", exclusive), func(t *testing.T) {
			s := newStripes(1)
			want := func(i int) bool { return i < 6 || i >= 60 } // span(0, 60, 10)
			s.locks[2].Lock()
			done := make(chan struct{})
			go func() {
				s.lockRange(0, 60, 10, exclusive)
				close(done)
			}()
			deadline := time.Now().Add(5 * time.Second)
			for s.locks[1].TryLock() {
				s.locks[1].Unlock()
				if time.Now().After(deadline) {
					t.Fatal("lockRange never took stripe 1")
				}
				time.Sleep(time.Millisecond)
			}
			time.Sleep(20 * time.Millisecond) // give a wrong order time to show
			got := lockedStripes(&s)
			for i, l := range got {
				if wantHeld := i < 3; l != wantHeld { // 0, 1 by lockRange, 2 by the test
					t.Errorf("while blocked on stripe 2: stripe %d held = %v, want %v", i, l, wantHeld)
				}
			}
			select {
			case <-done:
				t.Fatal("lockRange returned while stripe 2 was held")
			default:
			}
			s.locks[2].Unlock()
			<-done
			for i, l := range lockedStripes(&s) {
				if l != want(i) {
					t.Errorf("after lockRange: stripe %d held = %v, want %v", i, l, want(i))
				}
			}
			if !exclusive {
				// Shared: another reader gets in, a writer does not.
				if !s.locks[61].TryRLock() {
					t.Error("shared stripe refused another reader")
				} else {
					s.locks[61].RUnlock()
				}
			}
			s.unlockRange(0, 60, 10, exclusive)
			for i, l := range lockedStripes(&s) {
				if l {
					t.Errorf("after unlockRange: stripe %d still held", i)
				}
			}
		})
	}
}

func TestStripesLockSet(t *testing.T) {
	s := newStripes(1)
	got := s.lockSet([]int{9, 3, 9, 63, 0, 3})
	if !slices.Equal(got, []int{0, 3, 9, 63}) {
		t.Fatalf("lockSet returned %v, want sorted without duplicates", got)
	}
	for i, l := range lockedStripes(&s) {
		if l != slices.Contains(got, i) {
			t.Errorf("stripe %d held = %v", i, l)
		}
	}
	s.unlockSet(got)
	for i, l := range lockedStripes(&s) {
		if l {
			t.Errorf("stripe %d held after unlockSet", i)
		}
	}
}

func TestComputeLayout(t *testing.T) {
	alignUp := func(n int64) int64 { return (n + 4095) / 4096 * 4096 }
	for _, ls := range []int64{4 << 10, 8 << 10, 16 << 10, 32 << 10, 64 << 10} {
		eps := int64(metadata.EntriesPerSector(int(ls / 512)))
		entryArea := func(n int64) int64 { return (n + eps - 1) / eps * 512 }
		superblockArea := int64(metadata.SuperblockArea)
		// The smallest device holding one line, and one byte less.
		smallest := alignUp(superblockArea+entryArea(1)) + ls
		sizes := []int64{smallest, smallest + 511, smallest + ls - 1, smallest + ls, 1 << 20, 100<<20 + 12345, 1 << 30, 1 << 40}
		for _, dev := range sizes {
			l, err := computeLayout(dev, ls)
			if err != nil {
				t.Errorf("computeLayout(%d, %d): %v", dev, ls, err)
				continue
			}
			n := int64(l.numLines)
			switch {
			case n < 1:
				t.Errorf("computeLayout(%d, %d): %d lines", dev, ls, n)
			case l.lineSize != ls:
				t.Errorf("computeLayout(%d, %d): line size %d", dev, ls, l.lineSize)
			case l.dataOffset%4096 != 0:
				t.Errorf("computeLayout(%d, %d): data offset %d not aligned", dev, ls, l.dataOffset)
			case l.dataOffset < superblockArea+entryArea(n):
				t.Errorf("computeLayout(%d, %d): entries of %d lines overlap the data at %d", dev, ls, n, l.dataOffset)
			case l.dataOffset+n*ls > dev:
				t.Errorf("computeLayout(%d, %d): %d lines at %d run past the device", dev, ls, n, l.dataOffset)
			case alignUp(superblockArea+entryArea(n+1))+(n+1)*ls <= dev:
				t.Errorf("computeLayout(%d, %d): %d lines, but %d fit", dev, ls, n, n+1)
			}
			if got, want := l.lineOffset(lineIdx(n-1), 3), l.dataOffset+(n-1)*ls+3*512; got != want {
				t.Errorf("lineOffset(last, 3) = %d, want %d", got, want)
			}
		}
		if l, err := computeLayout(smallest, ls); err != nil || l.numLines != 1 {
			t.Errorf("computeLayout(%d, %d) = %d lines, %v; want exactly 1", smallest, ls, l.numLines, err)
		}
		for _, dev := range []int64{0, 512, int64(metadata.SuperblockArea), smallest - 1} {
			if _, err := computeLayout(dev, ls); !errors.Is(err, ErrCacheTooSmall) {
				t.Errorf("computeLayout(%d, %d): %v, want ErrCacheTooSmall", dev, ls, err)
			}
		}
	}
	for _, ls := range []int64{0, 512, 2 << 10, 3 << 10, 12 << 10, 128 << 10, -4096} {
		if _, err := computeLayout(1<<20, ls); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("computeLayout(1 MiB, line %d): %v, want ErrInvalidConfig", ls, err)
		}
		if ValidLineSize(ls) {
			t.Errorf("ValidLineSize(%d) = true", ls)
		}
	}
}

// TestLineSize pins the per-line metadata at 56 bytes: with the mapping's
// bucket it keeps a 4 KiB line within the 64-byte RAM budget.
func TestLineSize(t *testing.T) {
	if n := unsafe.Sizeof(line{}); n != 56 {
		t.Fatalf("line is %d bytes, want 56 (reorder fields to avoid padding)", n)
	}
}

func TestStripeLockSequence(t *testing.T) {
	var l stripeLock
	seq, ok := l.readBegin()
	if !ok || !l.readValid(seq) {
		t.Fatal("an idle stripe does not validate a read")
	}
	l.RLock()
	if !l.readValid(seq) {
		t.Error("a shared holder invalidated a read")
	}
	if l.TryLock() {
		t.Fatal("TryLock took a stripe held shared")
	}
	if !l.readValid(seq) {
		t.Error("a failed TryLock invalidated a read")
	}
	l.RUnlock()
	for name, lock := range map[string]func(){
		"Lock":    l.Lock,
		"TryLock": func() { l.TryLock() },
	} {
		seq, _ := l.readBegin()
		lock()
		if _, ok := l.readBegin(); ok {
			t.Errorf("%s: a read may begin while the stripe is held exclusively", name)
		}
		l.Unlock()
		if l.readValid(seq) {
			t.Errorf("%s: a read that spanned an exclusive hold validates", name)
		}
		if _, ok := l.readBegin(); !ok {
			t.Errorf("%s: a read may not begin after Unlock", name)
		}
	}
}

// refDetector is the stream table the simple way, with a Go map: the model
// seqDetector's open-addressed index must agree with.
type refDetector struct {
	streams map[int]*refStream // by LRU age: higher is more recent
	clock   int
}

type refStream struct {
	next  int64
	write bool
	bytes uint64
}

func (r *refDetector) bypass(p SeqCutoffParams, off, length int64, write, cacheFull bool) bool {
	r.clock++
	var s *refStream
	sequential := false
	for age, st := range r.streams {
		if st.next == off && st.write == write {
			s = st
			delete(r.streams, age)
			sequential = s.bytes+uint64(length) >= uint64(p.ThresholdBytes)
			break
		}
	}
	if s == nil {
		if len(r.streams) == seqStreams {
			oldest := -1
			for age := range r.streams {
				if oldest < 0 || age < oldest {
					oldest = age
				}
			}
			delete(r.streams, oldest)
		}
		s = &refStream{}
	}
	for _, st := range r.streams { // two streams met: the other is forgotten
		if st.next == off+length && st.write == write {
			st.next = -1
		}
	}
	s.next, s.write = off+length, write
	s.bytes += uint64(length)
	r.streams[r.clock] = s
	return sequential && (p.Policy == SeqCutoffAlways || cacheFull)
}

func TestSeqDetectorMatchesMapModel(t *testing.T) {
	for seed := range uint64(20) {
		// Thresholds below, within and above one request's size; the
		// promotion count must not matter.
		p := SeqCutoffParams{Policy: SeqCutoffAlways, ThresholdBytes: []uint64{1024, 8192, 40960}[seed%3], PromotionCount: []uint32{1, 8, 65535}[seed%5%3]}
		rng := rand.New(rand.NewPCG(seed, 7))
		d := newSeqDetector(p)
		ref := &refDetector{streams: map[int]*refStream{}}
		for op := range 20000 {
			// Offsets from a small space, so that streams continue, meet and
			// collide in the index; a few large ones.
			off := int64(rng.IntN(600)) * 4096
			if rng.IntN(50) == 0 {
				off = rng.Int64N(1 << 40)
			}
			length := int64(1+rng.IntN(3)) * 4096
			write := rng.IntN(2) == 0
			seq, policy := d.observe(off, length, write)
			got, want := seq && policy == SeqCutoffAlways, ref.bypass(p, off, length, write, false)
			if got != want {
				t.Fatalf("seed %d op %d: observe(%d, %d, %v) says bypass %v, model says %v", seed, op, off, length, write, got, want)
			}
			if op%997 == 0 {
				checkSeqIndex(t, d)
			}
		}
		checkSeqIndex(t, d)
	}
}

// checkSeqIndex checks that every stream expecting an offset is found
// through the index, and that the index holds nothing else.
func checkSeqIndex(t *testing.T, d *seqDetector) {
	t.Helper()
	live := 0
	for i := range d.streams {
		s := &d.streams[i]
		if s.next < 0 {
			continue
		}
		live++
		if _, got := d.find(s.next, s.write); got != int16(i) {
			t.Fatalf("stream %d (next %d, write %v) found as %d", i, s.next, s.write, got)
		}
	}
	used := 0
	for _, e := range d.index {
		if e != 0 {
			used++
		}
	}
	if used != live {
		t.Fatalf("index holds %d entries, %d streams are live", used, live)
	}
}

// TestHitCountTakenBackAfterReset: a lock-free hit counts before its copy
// and takes the count back if its check fails; a reset in between must not
// leave a shard that sums to 2^64-1.
func TestHitCountTakenBackAfterReset(t *testing.T) {
	c := newCounters()
	c.countHit(3, 4096, 1)
	c.countHit(5, 1024, 1)
	c.reset()
	c.countHit(3, 4096, -1)
	c.countHit(5, 1024, -1)
	if r, b := c.hitTotals(); r != 0 || b != 0 {
		t.Errorf("after a reset between a count and its take-back: %d reads, %d bytes, want 0, 0", r, b)
	}
	c.reset()
	c.countHit(7, 4096, 1)
	c.countHit(7, 1024, 1)
	if r, b := c.hitTotals(); r != 2 || b != 5120 {
		t.Errorf("%d reads, %d bytes, want 2, 5120", r, b)
	}
}
