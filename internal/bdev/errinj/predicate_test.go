package errinj_test

import (
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"blockcache/internal/bdev/errinj"
)

var (
	read0    = errinj.Op{Kind: errinj.OpRead, Offset: 0, Len: 4096}
	write4k  = errinj.Op{Kind: errinj.OpWrite, Offset: 4096, Len: 4096}
	flush    = errinj.Op{Kind: errinj.OpFlush}
	discard  = errinj.Op{Kind: errinj.OpDiscard, Offset: 8192, Len: 512}
	zeroes1m = errinj.Op{Kind: errinj.OpWriteZeroes, Offset: 1 << 20, Len: 1 << 20}
	allOps   = []errinj.Op{read0, write4k, flush, discard, zeroes1m}
)

func TestStatelessPredicates(t *testing.T) {
	tests := []struct {
		pred errinj.Predicate
		want []bool // for allOps
		str  string
	}{
		{errinj.Reads(), []bool{true, false, false, false, false}, "(Kind read)"},
		{errinj.Writes(), []bool{false, true, false, false, false}, "(Kind write)"},
		{errinj.Flushes(), []bool{false, false, true, false, false}, "(Kind flush)"},
		{errinj.OfKind(errinj.OpDiscard, errinj.OpWriteZeroes), []bool{false, false, false, true, true}, "(Kind discard write-zeroes)"},
		{errinj.InRange(0, 512), []bool{true, false, false, false, false}, "(InRange 0 512)"},
		{errinj.InRange(4095, 2), []bool{true, true, false, false, false}, "(InRange 4095 2)"},
		{errinj.InRange(8192, 1<<20), []bool{false, false, false, true, true}, ""},
		{errinj.InRange(8192+512, 1<<20-8192-512), []bool{false, false, false, false, false}, ""}, // touches both ends, overlaps neither
		{errinj.InRange(0, 0), []bool{false, false, false, false, false}, ""},
		{errinj.InRange(0, 1<<40), []bool{true, true, false, true, true}, ""}, // never a flush
		{errinj.And(errinj.Writes(), errinj.InRange(0, 8192)), []bool{false, true, false, false, false}, "(And (Kind write) (InRange 0 8192))"},
		{errinj.And(), []bool{true, true, true, true, true}, ""},
		{errinj.Or(errinj.Reads(), errinj.Flushes()), []bool{true, false, true, false, false}, "(Or (Kind read) (Kind flush))"},
		{errinj.Or(), []bool{false, false, false, false, false}, ""},
		{errinj.Not(errinj.Reads()), []bool{false, true, true, true, true}, "(Not (Kind read))"},
	}
	for _, tc := range tests {
		for i, op := range allOps {
			if got := tc.pred.Evaluate(op); got != tc.want[i] {
				t.Errorf("%v on %v = %v, want %v", tc.pred, op, got, tc.want[i])
			}
		}
		if tc.str != "" && tc.pred.String() != tc.str {
			t.Errorf("String = %q, want %q", tc.pred.String(), tc.str)
		}
	}
}

func TestOnIndex(t *testing.T) {
	p := errinj.OnIndex(2)
	var got []bool
	for range 5 {
		got = append(got, p.Evaluate(read0))
	}
	if want := []bool{false, false, true, false, false}; !slices.Equal(got, want) {
		t.Fatalf("OnIndex(2) = %v, want %v", got, want)
	}
	// Inside And it counts only the ops that reach it: the third write.
	p = errinj.And(errinj.Writes(), errinj.OnIndex(2))
	got = nil
	for _, op := range []errinj.Op{write4k, read0, write4k, read0, write4k, write4k} {
		got = append(got, p.Evaluate(op))
	}
	if want := []bool{false, false, false, false, true, false}; !slices.Equal(got, want) {
		t.Fatalf("And(Writes, OnIndex(2)) = %v, want %v", got, want)
	}
	if s := errinj.OnIndex(7).String(); s != "(OnIndex 7)" {
		t.Fatalf("String = %q", s)
	}
}

func TestNextN(t *testing.T) {
	c := errinj.NextN(3)
	var got []bool
	for range 5 {
		got = append(got, c.Evaluate(read0))
	}
	if want := []bool{true, true, true, false, false}; !slices.Equal(got, want) {
		t.Fatalf("NextN(3) = %v, want %v", got, want)
	}
	if c.Remaining() != 0 {
		t.Fatalf("Remaining = %d", c.Remaining())
	}
	c.Set(2)
	if c.Remaining() != 2 || c.String() != "(NextN 2)" || !c.Evaluate(read0) || c.Remaining() != 1 {
		t.Fatalf("after Set(2): Remaining %d, %q", c.Remaining(), c)
	}
	if errinj.NextN(-1).Evaluate(read0) || errinj.NextN(-1).Remaining() != 0 {
		t.Fatal("NextN(-1) matched")
	}

	// Under concurrency exactly n evaluations match.
	if hits := concurrentHits(errinj.NextN(100), 8, 100); hits != 100 {
		t.Fatalf("%d concurrent matches, want 100", hits)
	}
}

func TestRandomly(t *testing.T) {
	count := func(p errinj.Predicate, n int) (hits int, seq []bool) {
		for range n {
			b := p.Evaluate(read0)
			seq = append(seq, b)
			if b {
				hits++
			}
		}
		return hits, seq
	}
	const n = 20000
	if h, _ := count(errinj.Randomly(0, 1), n); h != 0 {
		t.Fatalf("p=0 matched %d times", h)
	}
	if h, _ := count(errinj.Randomly(1, 1), n); h != n {
		t.Fatalf("p=1 matched %d of %d", h, n)
	}
	if h, _ := count(errinj.Randomly(7, 1), 10); h != 10 {
		t.Fatalf("p>1 is not clamped to 1: %d of 10", h)
	}
	h, seqA := count(errinj.Randomly(0.1, 42), n)
	if h < n/10*8/10 || h > n/10*12/10 {
		t.Fatalf("p=0.1 matched %d of %d", h, n)
	}
	_, seqB := count(errinj.Randomly(0.1, 42), n)
	_, seqC := count(errinj.Randomly(0.1, 43), n)
	if !slices.Equal(seqA, seqB) {
		t.Fatal("same seed gave different sequences")
	}
	if slices.Equal(seqA, seqC) {
		t.Fatal("different seeds gave the same sequence")
	}

	// Safe for concurrent use (checked by the race detector).
	if hits := concurrentHits(errinj.Randomly(0.5, 9), 4, 1000); hits < 1500 || hits > 2500 {
		t.Fatalf("p=0.5 matched %d of 4000", hits)
	}
}

// concurrentHits evaluates p each times in each of goroutines goroutines
// at once and returns how many evaluations matched.
func concurrentHits(p errinj.Predicate, goroutines, each int) int64 {
	var hits atomic.Int64
	var wg sync.WaitGroup
	for range goroutines {
		wg.Go(func() {
			for range each {
				if p.Evaluate(read0) {
					hits.Add(1)
				}
			}
		})
	}
	wg.Wait()
	return hits.Load()
}
