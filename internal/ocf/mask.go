package ocf

import "math/bits"

// maxSectorsPerLine is the number of 512-byte sectors in the largest (64 KiB)
// cache line.
const maxSectorsPerLine = 128

// sectorMask has one bit per sector of a cache line; bit i is sector i.
type sectorMask [2]uint64

// rangeMask returns the mask of sectors [from, to).
func rangeMask(from, to int) sectorMask {
	var m sectorMask
	for w := range m {
		lo, hi := max(from-64*w, 0), min(to-64*w, 64)
		if lo >= hi {
			continue
		}
		n := hi - lo
		var word uint64
		if n == 64 {
			word = ^uint64(0)
		} else {
			word = (uint64(1)<<n - 1) << lo
		}
		m[w] = word
	}
	return m
}

func (m sectorMask) and(o sectorMask) sectorMask    { return sectorMask{m[0] & o[0], m[1] & o[1]} }
func (m sectorMask) or(o sectorMask) sectorMask     { return sectorMask{m[0] | o[0], m[1] | o[1]} }
func (m sectorMask) andNot(o sectorMask) sectorMask { return sectorMask{m[0] &^ o[0], m[1] &^ o[1]} }
func (m sectorMask) empty() bool                    { return m[0]|m[1] == 0 }
func (m sectorMask) count() int                     { return bits.OnesCount64(m[0]) + bits.OnesCount64(m[1]) }
func (m sectorMask) has(i int) bool                 { return m[i>>6]&(1<<(i&63)) != 0 }

// contains reports whether every sector of o is in m.
func (m sectorMask) contains(o sectorMask) bool { return o.andNot(m).empty() }

// nextRun returns the first run [start, end) of set sectors at or after from,
// or start == -1 when there is none below limit.
func (m sectorMask) nextRun(from, limit int) (start, end int) {
	i := from
	for i < limit && !m.has(i) {
		i++
	}
	if i >= limit {
		return -1, -1
	}
	j := i
	for j < limit && m.has(j) {
		j++
	}
	return i, j
}
