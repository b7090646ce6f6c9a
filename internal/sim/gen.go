package sim

import (
	"fmt"
	"math"
	"math/rand/v2"
)

// The generators' names.
const (
	GenZipf = "zipf" // random 4 KiB requests, Zipf-distributed block popularity
	GenScan = "scan" // zipf, with large sequential scans of fresh data interleaved
	GenSeq  = "seq"  // concurrent sequential streams, each looping over its own file
)

// GenKinds lists the generators.
func GenKinds() []string { return []string{GenZipf, GenScan, GenSeq} }

// maxZipfBlocks bounds the zipf working set in blocks (its tables cost 16
// bytes a block).
const maxZipfBlocks = 1 << 26

// GenParams configure a generator. DefaultGenParams gives every field a
// value; fields a generator does not use are ignored.
type GenParams struct {
	// Requests is the number of requests (scans and streams included).
	Requests int `json:"requests"`
	// Seed makes the trace: the same parameters and seed give the same trace.
	Seed uint64 `json:"seed"`

	// WorkingSetBytes: zipf and scan draw their random requests from the
	// blocks of [0, WorkingSetBytes); seq splits it into one file per stream.
	WorkingSetBytes int64 `json:"working_set_bytes"`
	// Skew is the Zipf exponent s >= 0: the block of popularity rank k
	// (1-based) is drawn with probability proportional to 1/k^s. Ranks are
	// assigned to blocks in a random order, so hot blocks are scattered.
	Skew float64 `json:"skew"`
	// BlockBytes is the size and alignment of zipf's random requests.
	BlockBytes int64 `json:"block_bytes"`
	// WritePct is the percentage of random requests that write; for seq, the
	// percentage of streams that write (each stream only reads or only
	// writes). Scans only read.
	WritePct int `json:"write_pct"`

	// ScanBytes is the length of each scan; 0 means half the working set.
	// Every scan reads data never read before (a region past the working
	// set and past the previous scan's, 1 MiB after it), so caching it only
	// pollutes the cache.
	ScanBytes int64 `json:"scan_bytes"`
	// ScanEvery: a scan starts after every ScanEvery random requests (the
	// first after half that, once the cache is warm); 0 means a tenth of
	// Requests. While a scan runs, its requests alternate with random ones.
	ScanEvery int `json:"scan_every"`
	// StreamRequestBytes is the size of scan and seq requests.
	StreamRequestBytes int64 `json:"stream_request_bytes"`
	// Streams is the number of concurrent seq streams; each request comes
	// from one of them chosen at random.
	Streams int `json:"streams"`

	// IOPS is the mean arrival rate within a burst (exponential
	// inter-arrival times).
	IOPS float64 `json:"iops"`
	// BurstRequests requests arrive back to back, then the volume is idle
	// for IdleSeconds (so that idle-time cleaning, alru, gets to act). 0
	// means no idle gaps.
	BurstRequests int     `json:"burst_requests"`
	IdleSeconds   float64 `json:"idle_s"`
}

// DefaultGenParams are the generators' defaults: 200k requests over a
// 256 MiB working set (four times the default 64 MiB cache), skew 0.9, 30%
// writes, scans of half the working set every tenth of the requests (128 MiB
// every 20k random requests), 8 streams of 128 KiB requests, 5000 IOPS in
// bursts of 50k requests separated by 60 s idle.
func DefaultGenParams() GenParams {
	return GenParams{
		Requests:           200000,
		Seed:               1,
		WorkingSetBytes:    256 << 20,
		Skew:               0.9,
		BlockBytes:         4 << 10,
		WritePct:           30,
		ScanBytes:          0, // half the working set
		ScanEvery:          0, // a tenth of the requests
		StreamRequestBytes: 128 << 10,
		Streams:            8,
		IOPS:               5000,
		BurstRequests:      50000,
		IdleSeconds:        60,
	}
}

// withDefaults resolves the fields whose zero value is derived from others.
func (p GenParams) withDefaults() GenParams {
	if p.ScanBytes == 0 {
		p.ScanBytes = max(p.WorkingSetBytes/2/SectorBytes*SectorBytes, SectorBytes)
	}
	if p.ScanEvery == 0 {
		p.ScanEvery = max(p.Requests/10, 1)
	}
	return p
}

func (p GenParams) validate(kind string) error {
	aligned := func(n int64) bool { return n > 0 && n%SectorBytes == 0 }
	var err error
	switch {
	case p.Requests < 1:
		err = fmt.Errorf("requests %d: want at least 1", p.Requests)
	case p.WritePct < 0 || p.WritePct > 100:
		err = fmt.Errorf("write percentage %d: want 0..100", p.WritePct)
	case !(p.IOPS > 0) || math.IsInf(p.IOPS, 0):
		err = fmt.Errorf("IOPS %v: want a finite number > 0", p.IOPS)
	case p.BurstRequests < 0 || !(p.IdleSeconds >= 0) || math.IsInf(p.IdleSeconds, 0):
		err = fmt.Errorf("bursts of %d requests, %v s idle: want numbers >= 0", p.BurstRequests, p.IdleSeconds)
	case kind == GenSeq && !aligned(p.StreamRequestBytes):
		err = fmt.Errorf("stream request of %d bytes: want a multiple of %d > 0", p.StreamRequestBytes, SectorBytes)
	case kind == GenSeq && p.Streams < 1:
		err = fmt.Errorf("%d streams: want at least 1", p.Streams)
	case kind == GenSeq && p.WorkingSetBytes/int64(p.Streams) < p.StreamRequestBytes:
		err = fmt.Errorf("working set of %d bytes: too small for %d streams of %d-byte requests", p.WorkingSetBytes, p.Streams, p.StreamRequestBytes)
	case kind == GenSeq:
	case !aligned(p.BlockBytes):
		err = fmt.Errorf("block of %d bytes: want a multiple of %d > 0", p.BlockBytes, SectorBytes)
	case p.WorkingSetBytes < p.BlockBytes:
		err = fmt.Errorf("working set of %d bytes: want at least one %d-byte block", p.WorkingSetBytes, p.BlockBytes)
	case p.WorkingSetBytes/p.BlockBytes > maxZipfBlocks:
		err = fmt.Errorf("working set of %d blocks: at most %d", p.WorkingSetBytes/p.BlockBytes, maxZipfBlocks)
	case !(p.Skew >= 0) || math.IsInf(p.Skew, 0):
		err = fmt.Errorf("skew %v: want a finite number >= 0", p.Skew)
	case kind == GenScan && (!aligned(p.ScanBytes) || !aligned(p.StreamRequestBytes) || p.ScanEvery < 1):
		err = fmt.Errorf("scans of %d bytes in %d-byte requests every %d requests: want multiples of %d > 0, every >= 1",
			p.ScanBytes, p.StreamRequestBytes, p.ScanEvery, SectorBytes)
	}
	return err
}

// Generate makes a trace with the named generator.
func Generate(kind string, p GenParams) ([]Request, error) {
	switch kind {
	case GenZipf, GenScan, GenSeq:
	default:
		return nil, fmt.Errorf("generator %q: want zipf, scan or seq", kind)
	}
	p = p.withDefaults()
	if err := p.validate(kind); err != nil {
		return nil, fmt.Errorf("generator %s: %w", kind, err)
	}
	g := &generator{p: p, rng: rand.New(rand.NewPCG(p.Seed, 0x5eed_b10c_cac4e))}
	g.out = make([]Request, 0, p.Requests)
	switch kind {
	case GenZipf:
		g.zipf(nil)
	case GenScan:
		g.zipf(g.newScanner())
	case GenSeq:
		g.seq()
	}
	return g.out, nil
}

type generator struct {
	p   GenParams
	rng *rand.Rand
	out []Request
	now float64 // seconds
}

// emit appends a request at the next arrival time.
func (g *generator) emit(op Op, off, length int64) {
	if n := len(g.out); n > 0 {
		g.now += g.rng.ExpFloat64() / g.p.IOPS
		if g.p.BurstRequests > 0 && n%g.p.BurstRequests == 0 {
			g.now += g.p.IdleSeconds
		}
	}
	g.out = append(g.out, Request{Time: g.now, Op: op, Offset: off, Length: length})
}

func (g *generator) full() bool { return len(g.out) >= g.p.Requests }

func (g *generator) randomOp() Op {
	if g.rng.IntN(100) < g.p.WritePct {
		return Write
	}
	return Read
}

// zipf emits random requests, with scans interleaved when sc is set.
func (g *generator) zipf(sc *scanner) {
	bs := g.p.BlockBytes
	blocks := int(g.p.WorkingSetBytes / bs)
	z := newZipf(blocks, g.p.Skew)
	blockOf := g.rng.Perm(blocks) // popularity rank -> block
	for random := 0; !g.full(); {
		if sc != nil && sc.step(g, random) {
			continue
		}
		g.emit(g.randomOp(), int64(blockOf[z.rank(g.rng)])*bs, bs)
		random++
	}
}

// scanGap separates the regions of successive scans, so that no scan
// continues the previous one.
const scanGap = 1 << 20

// scanner interleaves scans with the random requests.
type scanner struct {
	base          int64 // where the next scan starts
	pos, end      int64 // the running scan; pos == end when none runs
	pending       bool  // a scan is due and starts after the running one
	lastWasRandom bool
}

func (g *generator) newScanner() *scanner {
	const align = 1 << 20
	base := (g.p.WorkingSetBytes + align - 1) / align * align
	return &scanner{base: base, pos: base, end: base, lastWasRandom: true}
}

// step emits the scan's next request if it is the scan's turn, and reports
// whether it did. random is the number of random requests so far.
func (s *scanner) step(g *generator, random int) bool {
	every := g.p.ScanEvery
	if random%every == every/2 && s.lastWasRandom {
		s.pending = true
	}
	if s.pos == s.end && s.pending {
		s.pending = false
		s.pos, s.end = s.base, s.base+g.p.ScanBytes
		s.base = s.end + scanGap
	}
	if s.pos == s.end || !s.lastWasRandom {
		s.lastWasRandom = true
		return false
	}
	n := min(g.p.StreamRequestBytes, s.end-s.pos)
	g.emit(Read, s.pos, n)
	s.pos += n
	s.lastWasRandom = false
	return true
}

// seq emits requests from Streams sequential streams, each looping over its
// own file of WorkingSetBytes/Streams bytes from a random starting point.
func (g *generator) seq() {
	rb := g.p.StreamRequestBytes
	fileBytes := g.p.WorkingSetBytes / int64(g.p.Streams) / rb * rb
	type stream struct {
		base, pos int64
		op        Op
	}
	streams := make([]stream, g.p.Streams)
	for i := range streams {
		streams[i] = stream{base: int64(i) * fileBytes, pos: g.rng.Int64N(fileBytes/rb) * rb, op: g.randomOp()}
	}
	for !g.full() {
		s := &streams[g.rng.IntN(len(streams))]
		g.emit(s.op, s.base+s.pos, rb)
		s.pos = (s.pos + rb) % fileBytes
	}
}
