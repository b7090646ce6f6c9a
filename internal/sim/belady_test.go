package sim

import (
	"math/bits"
	"math/rand/v2"
	"testing"

	"pgregory.net/rapid"
)

// bruteOPT is the most hits any policy can get on ids with a cache of lines
// lines, where a policy may, after each access, keep any subset of the
// resident lines plus the line just accessed that fits (insertion only of
// the line being accessed, optional; eviction at any time). Exhaustive
// search over resident sets; ids must be < 16.
func bruteOPT(ids []int32, lines int) uint64 {
	memo := map[[2]int]uint64{}
	var best func(i int, set uint32) uint64
	best = func(i int, set uint32) uint64 {
		if i == len(ids) {
			return 0
		}
		key := [2]int{i, int(set)}
		if v, ok := memo[key]; ok {
			return v
		}
		x := uint32(1) << ids[i]
		var hit uint64
		if set&x != 0 {
			hit = 1
		}
		cand := set | x
		var most uint64
		for sub := cand; ; sub = (sub - 1) & cand {
			if bits.OnesCount32(sub) <= lines {
				most = max(most, best(i+1, sub))
			}
			if sub == 0 {
				break
			}
		}
		memo[key] = hit + most
		return hit + most
	}
	return best(0, 0)
}

// naiveOPT is Belady with bypass written the slow, obvious way: on a miss
// with a full cache, look ahead for every resident line's next use.
func naiveOPT(ids []int32, lines int) uint64 {
	nextUse := func(id int32, from int) int {
		for j := from; j < len(ids); j++ {
			if ids[j] == id {
				return j
			}
		}
		return len(ids)
	}
	resident := map[int32]bool{}
	var hits uint64
	for i, id := range ids {
		if resident[id] {
			hits++
			continue
		}
		nu := nextUse(id, i+1)
		if nu == len(ids) || lines == 0 {
			continue
		}
		if len(resident) < lines {
			resident[id] = true
			continue
		}
		var victim int32
		far := -1
		for r := range resident {
			if n := nextUse(r, i+1); n > far {
				far, victim = n, r
			}
		}
		if nu < far {
			delete(resident, victim)
			resident[id] = true
		}
	}
	return hits
}

func reqsOfLines(lines []int64, lineBytes int64) []Request {
	reqs := make([]Request, len(lines))
	for i, l := range lines {
		reqs[i] = Request{Time: float64(i), Op: Read, Offset: l * lineBytes, Length: lineBytes}
	}
	return reqs
}

func TestBeladyHandMade(t *testing.T) {
	for _, tc := range []struct {
		name  string
		lines []int64
		cache int
		hits  uint64
	}{
		{"empty", nil, 4, 0},
		{"no cache", []int64{1, 1, 1}, 0, 0},
		{"repeat", []int64{1, 1, 1}, 1, 2},
		// Forced insertion would get 0: b must not displace a.
		{"bypass", []int64{0, 1, 0}, 1, 1},
		// Textbook example, 3 frames: 1 2 3 4 1 2 5 1 2 3 4 5. MIN with
		// demand paging has 7 faults (5 hits); bypass does no better here.
		{"textbook", []int64{1, 2, 3, 4, 1, 2, 5, 1, 2, 3, 4, 5}, 3, 5},
		// Looping over 4 lines with 3: OPT keeps 2 of them resident
		// between passes.
		{"loop", []int64{0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3}, 3, 6},
		{"fits", []int64{0, 1, 2, 0, 1, 2, 0, 1, 2}, 3, 6},
	} {
		reqs := reqsOfLines(tc.lines, 4096)
		o, err := Belady(reqs, 4096, tc.cache)
		if err != nil {
			t.Fatal(err)
		}
		if o.Hits != tc.hits || o.Accesses != uint64(len(tc.lines)) || o.ReadHits != o.Hits || o.ReadAccesses != o.Accesses {
			t.Errorf("%s: %+v, want %d hits of %d", tc.name, o, tc.hits, len(tc.lines))
		}
		la, _ := expandLines(reqs, 4096)
		if b := bruteOPT(la.ids, tc.cache); b != tc.hits {
			t.Errorf("%s: brute force finds %d hits, want %d", tc.name, b, tc.hits)
		}
	}
}

// TestBeladyLines: requests are seen as line accesses; a request spanning
// lines touches each, writes count like reads.
func TestBeladyLines(t *testing.T) {
	reqs := []Request{
		{0, Write, 0, 8192},   // lines 0, 1
		{1, Read, 4096, 512},  // line 1: hit
		{2, Read, 6144, 4096}, // lines 1, 2: hit, miss
		{3, Write, 0, 512},    // line 0: hit
		{4, Read, 8192, 512},  // line 2: hit if kept
	}
	o, err := Belady(reqs, 4096, 3)
	if err != nil {
		t.Fatal(err)
	}
	want := OPT{Lines: 3, LineBytes: 4096, Accesses: 7, Hits: 4, ReadAccesses: 4, ReadHits: 3}
	if o != want {
		t.Fatalf("%+v, want %+v", o, want)
	}
	// One line of 16 KiB holds all three.
	if o, _ := Belady(reqs, 16384, 1); o.Accesses != 5 || o.Hits != 4 {
		t.Fatalf("16 KiB lines: %+v", o)
	}
}

// TestBeladyBruteForce compares Belady with an exhaustive search on random
// small traces, requests spanning several lines included.
func TestBeladyBruteForce(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		const lineBytes = 4096
		distinct := rapid.IntRange(1, 7).Draw(t, "distinct")
		n := rapid.IntRange(0, 14).Draw(t, "requests")
		cache := rapid.IntRange(0, 4).Draw(t, "cache")
		var reqs []Request
		for i := range n {
			first := rapid.IntRange(0, distinct-1).Draw(t, "line")
			span := rapid.IntRange(1, min(3, distinct-first)).Draw(t, "span")
			op := Read
			if rapid.Bool().Draw(t, "write") {
				op = Write
			}
			reqs = append(reqs, Request{Time: float64(i), Op: op, Offset: int64(first) * lineBytes, Length: int64(span) * lineBytes})
		}
		o, err := Belady(reqs, lineBytes, cache)
		if err != nil {
			t.Fatal(err)
		}
		la, _ := expandLines(reqs, lineBytes)
		if want := bruteOPT(la.ids, cache); o.Hits != want {
			t.Fatalf("Belady %d hits, brute force %d, on %v with %d lines", o.Hits, want, la.ids, cache)
		}
		if o.Accesses != uint64(len(la.ids)) || o.ReadHits > o.Hits || o.ReadAccesses > o.Accesses {
			t.Fatalf("%+v", o)
		}
	})
}

// TestBeladyLong compares Belady with the naive algorithm on traces long
// enough to compact the heap many times.
func TestBeladyLong(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	for _, tc := range []struct{ distinct, cache, n int }{{8, 3, 20000}, {100, 10, 20000}, {1000, 200, 20000}, {50, 50, 5000}, {50, 60, 5000}} {
		ids := make([]int64, tc.n)
		for i := range ids {
			// Skewed, so that there are many hits.
			ids[i] = int64(rng.IntN(tc.distinct) * rng.IntN(tc.distinct) / tc.distinct)
		}
		reqs := reqsOfLines(ids, 4096)
		o, err := Belady(reqs, 4096, tc.cache)
		if err != nil {
			t.Fatal(err)
		}
		la, _ := expandLines(reqs, 4096)
		if want := naiveOPT(la.ids, tc.cache); o.Hits != want {
			t.Errorf("%+v: Belady %d hits, naive %d", tc, o.Hits, want)
		}
	}
}

func TestBeladyErrors(t *testing.T) {
	if _, err := Belady(nil, 0, 1); err == nil {
		t.Error("0-byte lines accepted")
	}
	if _, err := Belady(nil, 4096, -1); err == nil {
		t.Error("-1 lines accepted")
	}
}
