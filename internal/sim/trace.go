// Package sim evaluates the cache engine on block IO traces: it reads and
// writes traces as CSV, generates synthetic ones (zipf, scan, seq), replays a
// trace through internal/ocf on in-memory devices under each combination of
// policies, and computes the optimal (Belady) hit ratio of the same trace for
// the same number of cache lines.
//
// Everything is deterministic: generators draw from a seeded PCG, the replay
// runs on one goroutine per policy with a fake clock driven by the trace's
// times, and the engine's decisions depend only on its inputs.
package sim

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
)

// Op is a request's direction.
type Op byte

// The two operations, as the CSV spells them.
const (
	Read  Op = 'R'
	Write Op = 'W'
)

func (o Op) String() string { return string(rune(o)) }

// SectorBytes is the alignment of every offset and length in a trace.
const SectorBytes = 512

// maxTraceEnd bounds offset+length, far beyond any device, so that sums of
// trace positions never overflow.
const maxTraceEnd = 1 << 60

// Request is one IO of a trace.
type Request struct {
	// Time is when the request is issued, in seconds since the start of the
	// trace; it never decreases along a trace.
	Time float64
	Op   Op
	// Offset and Length are in bytes, multiples of SectorBytes; Length > 0.
	Offset, Length int64
}

// End is the byte just past the request.
func (r Request) End() int64 { return r.Offset + r.Length }

// TraceHeader is the first line of a trace file.
const TraceHeader = "time,op,offset,length"

// ErrBadTrace marks every error about a trace's contents.
var ErrBadTrace = errors.New("bad trace")

// LineError is an error at one line of a trace file (1-based, the header
// being line 1).
type LineError struct {
	Line int
	Err  error
}

func (e *LineError) Error() string { return fmt.Sprintf("line %d: %v", e.Line, e.Err) }

// Unwrap returns the underlying error.
func (e *LineError) Unwrap() error { return e.Err }

// Is makes every LineError match ErrBadTrace.
func (e *LineError) Is(target error) bool { return target == ErrBadTrace }

// maxLineBytes bounds one line of a trace file.
const maxLineBytes = 4096

// ReadCSV reads a trace: the header line `time,op,offset,length` (in any
// case), then one request per line. Spaces around fields, blank lines and
// CRLF line ends are accepted; anything else that is not a valid request
// fails with a *LineError naming the line.
func ReadCSV(r io.Reader) ([]Request, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, maxLineBytes), maxLineBytes)
	var reqs []Request
	lineNo, header := 0, false
	prevTime := 0.0
	for sc.Scan() {
		lineNo++
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		if !header {
			if normalizeHeader(line) != TraceHeader {
				return nil, &LineError{lineNo, fmt.Errorf("header %q, want %q", short(line), TraceHeader)}
			}
			header = true
			continue
		}
		req, err := parseRequest(line)
		if err == nil && req.Time < prevTime {
			err = fmt.Errorf("time %v is before the previous request's %v (a trace is in time order)", req.Time, prevTime)
		}
		if err != nil {
			return nil, &LineError{lineNo, err}
		}
		prevTime = req.Time
		reqs = append(reqs, req)
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, &LineError{lineNo + 1, fmt.Errorf("longer than %d bytes", maxLineBytes)}
		}
		return nil, fmt.Errorf("read trace: %w", err)
	}
	if !header {
		return nil, fmt.Errorf("%w: empty, want the header %q", ErrBadTrace, TraceHeader)
	}
	return reqs, nil
}

func normalizeHeader(line string) string {
	fields := strings.Split(line, ",")
	for i, f := range fields {
		fields[i] = strings.ToLower(strings.TrimSpace(f))
	}
	return strings.Join(fields, ",")
}

func parseRequest(line string) (Request, error) {
	fields := strings.Split(line, ",")
	if len(fields) != 4 {
		return Request{}, fmt.Errorf("%d fields, want 4 (%s)", len(fields), TraceHeader)
	}
	for i := range fields {
		fields[i] = strings.TrimSpace(fields[i])
	}
	var r Request
	t, err := strconv.ParseFloat(fields[0], 64)
	if err != nil || math.IsNaN(t) || math.IsInf(t, 0) || t < 0 {
		return r, fmt.Errorf("time %q: want seconds, a finite number >= 0", short(fields[0]))
	}
	r.Time = t
	switch fields[1] {
	case "R":
		r.Op = Read
	case "W":
		r.Op = Write
	default:
		return r, fmt.Errorf("op %q: want R or W", short(fields[1]))
	}
	if r.Offset, err = parseBytes("offset", fields[2], false); err != nil {
		return r, err
	}
	if r.Length, err = parseBytes("length", fields[3], true); err != nil {
		return r, err
	}
	if r.Offset > maxTraceEnd-r.Length {
		return r, fmt.Errorf("offset %d + length %d: beyond %d bytes", r.Offset, r.Length, int64(maxTraceEnd))
	}
	return r, nil
}

// short cuts s for an error message.
func short(s string) string {
	const n = 40
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

func parseBytes(name, s string, positive bool) (int64, error) {
	n, err := strconv.ParseInt(s, 10, 64)
	switch {
	case err != nil:
		return 0, fmt.Errorf("%s %q: want a whole number of bytes", name, short(s))
	case n < 0 || (positive && n == 0):
		return 0, fmt.Errorf("%s %d: want a number > 0", name, n)
	case n%SectorBytes != 0:
		return 0, fmt.Errorf("%s %d: not a multiple of %d bytes", name, n, SectorBytes)
	case n > maxTraceEnd:
		return 0, fmt.Errorf("%s %d: beyond %d bytes", name, n, int64(maxTraceEnd))
	}
	return n, nil
}

// WriteCSV writes reqs in the format ReadCSV reads. Times are written in the
// shortest decimal form that reads back to the same float64.
func WriteCSV(w io.Writer, reqs []Request) error {
	bw := bufio.NewWriter(w)
	bw.WriteString(TraceHeader + "\n")
	var buf []byte
	for _, r := range reqs {
		buf = strconv.AppendFloat(buf[:0], r.Time, 'f', -1, 64)
		buf = append(buf, ',', byte(r.Op), ',')
		buf = strconv.AppendInt(buf, r.Offset, 10)
		buf = append(buf, ',')
		buf = strconv.AppendInt(buf, r.Length, 10)
		buf = append(buf, '\n')
		bw.Write(buf)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write trace: %w", err)
	}
	return nil
}

// Validate checks that reqs is a trace ReadCSV would accept (the
// generators' output, or a trace built in code).
func Validate(reqs []Request) error {
	prev := 0.0
	for i, r := range reqs {
		var err error
		switch {
		case math.IsNaN(r.Time) || math.IsInf(r.Time, 0) || r.Time < 0:
			err = fmt.Errorf("time %v: want a finite number >= 0", r.Time)
		case r.Time < prev:
			err = fmt.Errorf("time %v is before the previous request's %v", r.Time, prev)
		case r.Op != Read && r.Op != Write:
			err = fmt.Errorf("op %q: want R or W", byte(r.Op))
		case r.Offset < 0 || r.Length <= 0 || r.Offset%SectorBytes != 0 || r.Length%SectorBytes != 0 || r.Offset > maxTraceEnd-r.Length:
			err = fmt.Errorf("offset %d length %d: want %d-byte aligned, length > 0", r.Offset, r.Length, SectorBytes)
		}
		if err != nil {
			return fmt.Errorf("%w: request %d: %w", ErrBadTrace, i, err)
		}
		prev = r.Time
	}
	return nil
}

// Summary describes a trace.
type Summary struct {
	Requests     int     `json:"requests"`
	Reads        int     `json:"reads"`
	Writes       int     `json:"writes"`
	ReadBytes    int64   `json:"read_bytes"`
	WriteBytes   int64   `json:"write_bytes"`
	EndBytes     int64   `json:"end_bytes"` // the highest byte touched, plus one
	DurationSecs float64 `json:"duration_s"`
}

// Summarize returns reqs' summary.
func Summarize(reqs []Request) Summary {
	var s Summary
	s.Requests = len(reqs)
	for _, r := range reqs {
		if r.Op == Read {
			s.Reads++
			s.ReadBytes += r.Length
		} else {
			s.Writes++
			s.WriteBytes += r.Length
		}
		s.EndBytes = max(s.EndBytes, r.End())
	}
	if len(reqs) > 0 {
		s.DurationSecs = reqs[len(reqs)-1].Time
	}
	return s
}
