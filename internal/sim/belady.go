package sim

import (
	"fmt"
	"math"
)

// Belady's optimal replacement (MIN/OPT), computed offline.
//
// Conventions (docs/sim.md):
//   - Granularity is the cache line: a request of the trace is the accesses,
//     in order, to every line it touches (line = offset / line size, as the
//     engine maps core lines). A line access hits if the line is resident.
//   - Reads and writes are both accesses; a write to a resident line hits.
//   - Insertion is optional (bypass): on a miss, the line is inserted only if
//     its next use comes before the farthest next use among the resident
//     lines, which is then evicted; a line never used again is not inserted.
//     This is the optimum over every policy that inserts only the line being
//     accessed and holds at most `lines` lines, with or without bypass,
//     promotion or sequential cutoff: it bounds the engine, whose
//     pass-through, nhit and sequential cutoff are such bypasses. Forced
//     insertion (textbook MIN) would not be a bound: it can lose hits that
//     a bypass keeps.
//   - Partial lines do not exist for OPT: the engine may miss on a resident
//     line whose touched sectors are not all valid; OPT counts a hit.

// OPT is what Belady's algorithm achieves on a trace.
type OPT struct {
	Lines     int   `json:"lines"`      // cache lines
	LineBytes int64 `json:"line_bytes"` // cache line size
	// Accesses and Hits count line accesses (reads and writes).
	Accesses uint64 `json:"accesses"`
	Hits     uint64 `json:"hits"`
	// ReadAccesses and ReadHits count the reads among them under the same
	// schedule, which maximises all hits, not read hits: a policy may beat
	// ReadHits by giving up write hits.
	ReadAccesses uint64 `json:"read_accesses"`
	ReadHits     uint64 `json:"read_hits"`
}

// HitRatio is Hits / Accesses (0 for no access).
func (o OPT) HitRatio() float64 { return ratio(o.Hits, o.Accesses) }

// ReadHitRatio is ReadHits / ReadAccesses.
func (o OPT) ReadHitRatio() float64 { return ratio(o.ReadHits, o.ReadAccesses) }

func ratio(a, b uint64) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

// lineAccesses is a trace seen as line accesses: ids numbers the distinct
// lines densely in order of first access.
type lineAccesses struct {
	ids      []int32
	reads    []bool
	distinct int
}

// maxLineAccesses bounds the line accesses of one trace (int32 positions).
const maxLineAccesses = math.MaxInt32 - 1

func expandLines(reqs []Request, lineBytes int64) (lineAccesses, error) {
	total := int64(0)
	for _, r := range reqs {
		total += (r.End()+lineBytes-1)/lineBytes - r.Offset/lineBytes
		if total > maxLineAccesses {
			return lineAccesses{}, fmt.Errorf("trace of %d requests: more than %d line accesses", len(reqs), maxLineAccesses)
		}
	}
	la := lineAccesses{ids: make([]int32, 0, total), reads: make([]bool, 0, total)}
	dense := make(map[int64]int32)
	for _, r := range reqs {
		for l := r.Offset / lineBytes; l*lineBytes < r.End(); l++ {
			id, ok := dense[l]
			if !ok {
				id = int32(len(dense))
				dense[l] = id
			}
			la.ids = append(la.ids, id)
			la.reads = append(la.reads, r.Op == Read)
		}
	}
	la.distinct = len(dense)
	return la, nil
}

// Belady computes the optimal hits of reqs for a cache of lines lines of
// lineBytes bytes, in O(A log A) time for A line accesses (next-use indices
// and a max-heap of resident lines keyed by next use).
func Belady(reqs []Request, lineBytes int64, lines int) (OPT, error) {
	if lineBytes <= 0 || lines < 0 {
		return OPT{}, fmt.Errorf("belady: %d lines of %d bytes", lines, lineBytes)
	}
	la, err := expandLines(reqs, lineBytes)
	if err != nil {
		return OPT{}, err
	}
	o := beladyLines(la, lines)
	o.LineBytes = lineBytes
	return o, nil
}

// never is the next use of a line not accessed again.
const never = math.MaxInt32

func beladyLines(la lineAccesses, lines int) OPT {
	o := OPT{Lines: lines, Accesses: uint64(len(la.ids))}
	n := len(la.ids)
	// next[i]: the position of the next access to la.ids[i]'s line.
	next := make([]int32, n)
	// pos: per line, first the next position seen (backward pass), then
	// the line's next use while it is resident, -1 while it is not.
	pos := make([]int32, la.distinct)
	for i := range pos {
		pos[i] = never
	}
	for i := n - 1; i >= 0; i-- {
		next[i] = pos[la.ids[i]]
		pos[la.ids[i]] = int32(i)
	}
	for i := range pos {
		pos[i] = -1
	}
	var h nextUseHeap
	resident := 0
	for i, id := range la.ids {
		read := la.reads[i]
		if read {
			o.ReadAccesses++
		}
		nu := next[i]
		if pos[id] >= 0 {
			o.Hits++
			if read {
				o.ReadHits++
			}
			if nu == never {
				pos[id] = -1 // not needed again: free its line
				resident--
				continue
			}
			pos[id] = nu
			h.push(heapEntry{nu, id}) // the entry keyed by i is now stale
			if len(h) > 2*lines+1024 {
				h.compact(pos)
			}
			continue
		}
		switch {
		case nu == never || lines == 0:
			// Bypass: inserting it could only displace something useful.
		case resident < lines:
			pos[id] = nu
			h.push(heapEntry{nu, id})
			resident++
		default:
			top := h.validTop(pos)
			if nu < top.next {
				h.pop()
				pos[top.id] = -1
				pos[id] = nu
				h.push(heapEntry{nu, id})
			}
		}
	}
	return o
}

// heapEntry is a resident line and its next use. Entries go stale when the
// line is accessed again (a fresh entry is pushed) or evicted; an entry is
// valid iff pos[id] == next. Positions are unique, so at most one entry of a
// line is valid.
type heapEntry struct{ next, id int32 }

// nextUseHeap is a max-heap on next use.
type nextUseHeap []heapEntry

func (h *nextUseHeap) push(e heapEntry) {
	*h = append(*h, e)
	s := *h
	for i := len(s) - 1; i > 0; {
		p := (i - 1) / 2
		if s[p].next >= s[i].next {
			break
		}
		s[p], s[i] = s[i], s[p]
		i = p
	}
}

func (h *nextUseHeap) pop() heapEntry {
	s := *h
	top := s[0]
	last := len(s) - 1
	s[0] = s[last]
	*h = s[:last]
	h.down(0)
	return top
}

func (h nextUseHeap) down(i int) {
	for {
		l := 2*i + 1
		if l >= len(h) {
			return
		}
		m := l
		if r := l + 1; r < len(h) && h[r].next > h[l].next {
			m = r
		}
		if h[i].next >= h[m].next {
			return
		}
		h[i], h[m] = h[m], h[i]
		i = m
	}
}

// validTop drops stale entries from the top and returns the valid one with
// the farthest next use. The heap must hold a valid entry.
func (h *nextUseHeap) validTop(pos []int32) heapEntry {
	for (*h)[0].next != pos[(*h)[0].id] {
		h.pop()
	}
	return (*h)[0]
}

// compact drops every stale entry and restores the heap order.
func (h *nextUseHeap) compact(pos []int32) {
	s := (*h)[:0]
	for _, e := range *h {
		if pos[e.id] == e.next {
			s = append(s, e)
		}
	}
	*h = s
	for i := len(s)/2 - 1; i >= 0; i-- {
		s.down(i)
	}
}
