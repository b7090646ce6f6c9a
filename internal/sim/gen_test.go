package sim

import (
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"testing"
)

// smallGenParams keep generated traces small enough for race-detector
// tests: 4 MiB working set, 20000 requests, 1 MiB scans every 2000 random
// requests, 64 KiB stream requests, bursts of 5000 with 150 s idle.
func smallGenParams() GenParams {
	p := DefaultGenParams()
	p.Requests = 20000
	p.WorkingSetBytes = 4 << 20
	p.ScanBytes = 1 << 20
	p.ScanEvery = 2000
	p.StreamRequestBytes = 64 << 10
	p.BurstRequests = 5000
	p.IdleSeconds = 150
	return p
}

func TestGenerateDeterministic(t *testing.T) {
	for _, kind := range GenKinds() {
		p := smallGenParams()
		a, err := Generate(kind, p)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := Generate(kind, p)
		if !slices.Equal(a, b) {
			t.Errorf("%s: two traces from seed %d differ", kind, p.Seed)
		}
		p.Seed++
		c, _ := Generate(kind, p)
		if slices.Equal(a, c) {
			t.Errorf("%s: seeds %d and %d give the same trace", kind, p.Seed-1, p.Seed)
		}
		if len(a) != p.Requests {
			t.Errorf("%s: %d requests, want %d", kind, len(a), p.Requests)
		}
		if err := Validate(a); err != nil {
			t.Errorf("%s: %v", kind, err)
		}
		// Idle gaps separate the bursts.
		s := Summarize(a)
		bursts := (p.Requests - 1) / p.BurstRequests
		if minDur := float64(bursts) * p.IdleSeconds; s.DurationSecs < minDur || s.DurationSecs > minDur+float64(p.Requests)/p.IOPS*1.5 {
			t.Errorf("%s: lasts %.1f s; %d idle gaps of %v s and %d requests at %v IOPS", kind, s.DurationSecs, bursts, p.IdleSeconds, p.Requests, p.IOPS)
		}
	}
}

func TestGenerateErrors(t *testing.T) {
	for _, tc := range []struct {
		kind string
		mod  func(*GenParams)
		want string
	}{
		{"lru", func(*GenParams) {}, `generator "lru"`},
		{GenZipf, func(p *GenParams) { p.Requests = 0 }, "requests 0"},
		{GenZipf, func(p *GenParams) { p.Skew = -1 }, "skew -1"},
		{GenZipf, func(p *GenParams) { p.Skew = math.NaN() }, "skew NaN"},
		{GenZipf, func(p *GenParams) { p.BlockBytes = 1000 }, "block of 1000 bytes"},
		{GenZipf, func(p *GenParams) { p.WorkingSetBytes = 512 }, "working set of 512 bytes"},
		{GenZipf, func(p *GenParams) { p.WorkingSetBytes = 1 << 50 }, "at most"},
		{GenZipf, func(p *GenParams) { p.WritePct = 101 }, "write percentage 101"},
		{GenZipf, func(p *GenParams) { p.IOPS = 0 }, "IOPS 0"},
		{GenZipf, func(p *GenParams) { p.IdleSeconds = -1 }, "idle"},
		{GenScan, func(p *GenParams) { p.ScanEvery = -1 }, "every -1 requests"},
		{GenScan, func(p *GenParams) { p.ScanBytes = 100 }, "scans of 100 bytes"},
		{GenScan, func(p *GenParams) { p.ScanBytes = -512 }, "scans of -512 bytes"},
		{GenSeq, func(p *GenParams) { p.Streams = 0 }, "0 streams"},
		{GenSeq, func(p *GenParams) { p.StreamRequestBytes = 0 }, "stream request of 0 bytes"},
		{GenSeq, func(p *GenParams) { p.WorkingSetBytes = 256 << 10 }, "too small for 8 streams"},
	} {
		p := smallGenParams()
		tc.mod(&p)
		if _, err := Generate(tc.kind, p); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s %+v: %v, want %q", tc.kind, p, err, tc.want)
		}
	}
}

// blockCounts counts how often each block of bs bytes is requested,
// most requested first.
func blockCounts(reqs []Request, bs int64) []int {
	m := map[int64]int{}
	for _, r := range reqs {
		m[r.Offset/bs]++
	}
	var counts []int
	for _, c := range m {
		counts = append(counts, c)
	}
	sort.Sort(sort.Reverse(sort.IntSlice(counts)))
	return counts
}

// zipfSlope fits log(count) = a - s log(rank) over ranks 1..n by least
// squares and returns s.
func zipfSlope(counts []int, n int) float64 {
	var sx, sy, sxx, sxy float64
	for k := range n {
		x, y := math.Log(float64(k+1)), math.Log(float64(counts[k]))
		sx, sy, sxx, sxy = sx+x, sy+y, sxx+x*x, sxy+x*y
	}
	fn := float64(n)
	return -(fn*sxy - sx*sy) / (fn*sxx - sx*sx)
}

// TestZipfSkew: the skew is measurable in the trace: the rank-frequency
// slope of the blocks matches s, and ranks are scattered over the working
// set.
func TestZipfSkew(t *testing.T) {
	for _, s := range []float64{0.6, 0.9, 1.2} {
		p := smallGenParams()
		p.Requests = 100000
		p.Skew = s
		reqs, err := Generate(GenZipf, p)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range reqs {
			if r.Length != p.BlockBytes || r.Offset%p.BlockBytes != 0 || r.End() > p.WorkingSetBytes {
				t.Fatalf("request %+v: not a block of the working set", r)
			}
		}
		counts := blockCounts(reqs, p.BlockBytes)
		if got := zipfSlope(counts, 100); math.Abs(got-s) > 0.1 {
			t.Errorf("skew %v: measured rank-frequency slope %.3f", s, got)
		}
		// The hottest blocks are scattered over the working set, not the
		// first blocks in rank order.
		m := map[int64]int{}
		for _, r := range reqs {
			m[r.Offset/p.BlockBytes]++
		}
		var hot []int64
		for b, c := range m {
			if c >= counts[9] {
				hot = append(hot, b)
			}
		}
		if slices.Max(hot) < 16 {
			t.Errorf("skew %v: the hottest blocks are %v, bunched at the start", s, hot)
		}
		writes := 0
		for _, r := range reqs {
			if r.Op == Write {
				writes++
			}
		}
		if pct := 100 * float64(writes) / float64(len(reqs)); math.Abs(pct-float64(p.WritePct)) > 1 {
			t.Errorf("%.1f%% writes, want %d%%", pct, p.WritePct)
		}
	}
	// s = 0 is uniform: every block drawn about equally.
	p := smallGenParams()
	p.Skew, p.Requests = 0, 100000
	reqs, _ := Generate(GenZipf, p)
	counts := blockCounts(reqs, p.BlockBytes)
	if blocks := int(p.WorkingSetBytes / p.BlockBytes); len(counts) != blocks || counts[0] > 2*counts[len(counts)-1]+40 {
		t.Errorf("uniform: %d blocks drawn of %d, counts %d..%d", len(counts), blocks, counts[len(counts)-1], counts[0])
	}
}

// TestZipfSampler compares the sampler's frequencies with the exact
// probabilities.
func TestZipfSampler(t *testing.T) {
	const n, draws, s = 10, 200000, 1.0
	z := newZipf(n, s)
	rng := rand.New(rand.NewPCG(1, 2))
	var got [n]int
	for range draws {
		got[z.rank(rng)]++
	}
	h := 0.0
	for k := range n {
		h += 1 / math.Pow(float64(k+1), s)
	}
	for k := range n {
		want := draws / math.Pow(float64(k+1), s) / h
		if math.Abs(float64(got[k])-want) > 5*math.Sqrt(want) {
			t.Errorf("rank %d: %d draws, want about %.0f", k, got[k], want)
		}
	}
}

// seqRuns returns the lengths in bytes of the sequential runs of reqs: a
// request continues a run if it starts where an earlier request ended and
// goes the same way (runs may interleave).
func seqRuns(reqs []Request) []int64 {
	type key struct {
		end int64
		op  Op
	}
	open := map[key]int64{} // run end -> bytes so far
	var done []int64
	for _, r := range reqs {
		k := key{r.Offset, r.Op}
		n, ok := open[k]
		if ok {
			delete(open, k)
		}
		open[key{r.End(), r.Op}] = n + r.Length
	}
	for _, n := range open {
		done = append(done, n)
	}
	return done
}

// TestScanDefaults: scans default to half the working set, every tenth of
// the requests.
func TestScanDefaults(t *testing.T) {
	p := DefaultGenParams()
	p.Requests, p.WorkingSetBytes = 20000, 4<<20
	reqs, err := Generate(GenScan, p)
	if err != nil {
		t.Fatal(err)
	}
	long := 0
	for _, n := range seqRuns(reqs) {
		if n == 2<<20 {
			long++
		}
	}
	// About 10 scans; the random requests are fewer than 20000, so the
	// last one may not be reached.
	if long < 8 || long > 10 {
		t.Errorf("%d scans of 2 MiB", long)
	}
}

// TestScanShape: the scan trace is the zipf trace's random requests with
// long sequential read runs of fresh data interleaved, one scan per
// ScanEvery random requests.
func TestScanShape(t *testing.T) {
	p := smallGenParams()
	reqs, err := Generate(GenScan, p)
	if err != nil {
		t.Fatal(err)
	}
	random, scan := 0, 0
	seen := map[int64]bool{}
	for _, r := range reqs {
		if r.Offset < p.WorkingSetBytes {
			random++
			if r.Length != p.BlockBytes {
				t.Fatalf("random request %+v", r)
			}
			continue
		}
		scan++
		if r.Op != Read || r.Length != p.StreamRequestBytes {
			t.Fatalf("scan request %+v: want %d-byte reads", r, p.StreamRequestBytes)
		}
		if seen[r.Offset] {
			t.Fatalf("scan request %+v reads data scanned before", r)
		}
		seen[r.Offset] = true
	}
	var long int
	for _, n := range seqRuns(reqs) {
		if n >= p.ScanBytes {
			long++
		}
	}
	wantScans := (random + p.ScanEvery/2) / p.ScanEvery
	if long < wantScans-1 || long > wantScans+1 {
		t.Errorf("%d sequential runs of at least %d bytes for %d random requests (a scan every %d), want about %d",
			long, p.ScanBytes, random, p.ScanEvery, wantScans)
	}
	if per := int(p.ScanBytes / p.StreamRequestBytes); scan < (long-1)*per || scan > (long+1)*per {
		t.Errorf("%d scan requests for %d scans of %d requests", scan, long, per)
	}
	// Scans alternate with random requests: no two scan requests in a row.
	for i := 1; i < len(reqs); i++ {
		if reqs[i].Offset >= p.WorkingSetBytes && reqs[i-1].Offset >= p.WorkingSetBytes {
			t.Fatalf("requests %d and %d are both scan requests", i-1, i)
		}
	}
	// The random part is the zipf generator's kind of traffic: skewed.
	rnd := slices.DeleteFunc(slices.Clone(reqs), func(r Request) bool { return r.Offset >= p.WorkingSetBytes })
	if got := zipfSlope(blockCounts(rnd, p.BlockBytes), 50); math.Abs(got-p.Skew) > 0.15 {
		t.Errorf("random part's slope %.3f, skew %v", got, p.Skew)
	}
}

// TestSeqShape: every seq request continues one of Streams streams, each
// looping over its own file, reading or writing.
func TestSeqShape(t *testing.T) {
	p := smallGenParams()
	reqs, err := Generate(GenSeq, p)
	if err != nil {
		t.Fatal(err)
	}
	file := p.WorkingSetBytes / int64(p.Streams) / p.StreamRequestBytes * p.StreamRequestBytes
	type stream struct {
		next int64
		op   Op
		seen bool
	}
	streams := make([]stream, p.Streams)
	for i, r := range reqs {
		s := &streams[r.Offset/file]
		if r.Length != p.StreamRequestBytes {
			t.Fatalf("request %d: %+v", i, r)
		}
		if s.seen && (r.Offset != s.next || r.Op != s.op) {
			t.Fatalf("request %d: %+v does not continue stream %d at %d (%c)", i, r, r.Offset/file, s.next, s.op)
		}
		s.seen, s.op = true, r.Op
		s.next = r.End()
		if s.next == (r.Offset/file+1)*file {
			s.next -= file // wraps to the start of its file
		}
	}
	for i, s := range streams {
		if !s.seen {
			t.Errorf("stream %d never issued a request", i)
		}
	}
}
