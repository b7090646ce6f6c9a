package sim

import (
	"bytes"
	"errors"
	"math"
	"slices"
	"strings"
	"testing"

	"pgregory.net/rapid"
)

func TestCSVRoundTrip(t *testing.T) {
	for _, kind := range GenKinds() {
		p := smallGenParams()
		reqs, err := Generate(kind, p)
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		if err := WriteCSV(&buf, reqs); err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(buf.String(), TraceHeader+"\n") {
			t.Fatalf("%s: written trace starts %q", kind, buf.String()[:40])
		}
		got, err := ReadCSV(&buf)
		if err != nil {
			t.Fatalf("%s: read back: %v", kind, err)
		}
		if !slices.Equal(got, reqs) {
			t.Fatalf("%s: read back %d requests that differ from the %d written", kind, len(got), len(reqs))
		}
	}
}

// TestCSVRoundTripProperty: any valid trace, times included (shortest
// round-tripping decimal), reads back identical.
func TestCSVRoundTripProperty(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		n := rapid.IntRange(0, 50).Draw(t, "n")
		reqs := make([]Request, n)
		now := 0.0
		for i := range reqs {
			now += rapid.Float64Range(0, 1e6).Draw(t, "dt")
			op := Read
			if rapid.Bool().Draw(t, "write") {
				op = Write
			}
			reqs[i] = Request{
				Time:   now,
				Op:     op,
				Offset: rapid.Int64Range(0, 1<<40).Draw(t, "sector") * SectorBytes,
				Length: rapid.Int64Range(1, 1<<12).Draw(t, "sectors") * SectorBytes,
			}
		}
		if err := Validate(reqs); err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		if err := WriteCSV(&buf, reqs); err != nil {
			t.Fatal(err)
		}
		got, err := ReadCSV(&buf)
		if err != nil {
			t.Fatalf("read back: %v\n%s", err, buf.String())
		}
		if len(got) != len(reqs) || (n > 0 && !slices.Equal(got, reqs)) {
			t.Fatalf("read back %v, wrote %v", got, reqs)
		}
	})
}

func TestReadCSVLenient(t *testing.T) {
	in := "\n Time , OP,Offset,LENGTH\r\n0,R,0,4096\r\n\n 0.5 , W , 512 , 1024 \n1e1,R,1048576,512\n"
	got, err := ReadCSV(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	want := []Request{{0, Read, 0, 4096}, {0.5, Write, 512, 1024}, {10, Read, 1 << 20, 512}}
	if !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	if got, err := ReadCSV(strings.NewReader(TraceHeader + "\n")); err != nil || len(got) != 0 {
		t.Fatalf("header only: %v, %v", got, err)
	}
}

func TestReadCSVErrors(t *testing.T) {
	const h = TraceHeader + "\n"
	for _, tc := range []struct {
		in   string
		line int // 0: not a line error
		want string
	}{
		{"", 0, "empty"},
		{"\n\n", 0, "empty"},
		{"time,op,offset\n0,R,0,512\n", 1, `header "time,op,offset"`},
		{"0,R,0,512\n", 1, "header"},
		{h + "0,R,0\n", 2, "3 fields, want 4"},
		{h + "0,R,0,512,1\n", 2, "5 fields"},
		{h + "0,R,0,512\nx,R,0,512\n", 3, `time "x"`},
		{h + "-1,R,0,512\n", 2, `time "-1"`},
		{h + "NaN,R,0,512\n", 2, "finite"},
		{h + "Inf,R,0,512\n", 2, "finite"},
		{h + "0,r,0,512\n", 2, `op "r": want R or W`},
		{h + "0,X,0,512\n", 2, `op "X"`},
		{h + "0,R,100,512\n", 2, "offset 100: not a multiple of 512"},
		{h + "0,R,-512,512\n", 2, "offset -512"},
		{h + "0,R,0x200,512\n", 2, `offset "0x200"`},
		{h + "0,R,0,0\n", 2, "length 0: want a number > 0"},
		{h + "0,R,0,1000\n", 2, "length 1000: not a multiple of 512"},
		{h + "0,R,0,4.5\n", 2, `length "4.5"`},
		{h + "0,R,1152921504606846976,512\n", 2, "beyond"},
		{h + "\n2,R,0,512\n1,W,0,512\n", 4, "time 1 is before the previous request's 2"},
		{h + "0,R,0," + strings.Repeat("5", 5000) + "\n", 2, "longer than"},
	} {
		_, err := ReadCSV(strings.NewReader(tc.in))
		if err == nil {
			t.Errorf("%q: no error", tc.in)
			continue
		}
		if !errors.Is(err, ErrBadTrace) {
			t.Errorf("%q: %v is not ErrBadTrace", tc.in, err)
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %q does not contain %q", tc.in, err, tc.want)
		}
		var le *LineError
		switch {
		case tc.line == 0 && errors.As(err, &le):
			t.Errorf("%q: %v names a line", tc.in, err)
		case tc.line != 0 && (!errors.As(err, &le) || le.Line != tc.line):
			t.Errorf("%q: %v, want an error at line %d", tc.in, err, tc.line)
		case tc.line != 0 && !strings.HasPrefix(err.Error(), "line "):
			t.Errorf("%q: %q does not start with the line", tc.in, err)
		}
	}
}

func TestValidate(t *testing.T) {
	ok := Request{Time: 1, Op: Read, Offset: 512, Length: 512}
	if err := Validate([]Request{ok, ok}); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []Request{
		{Time: math.NaN(), Op: Read, Length: 512},
		{Time: 0.5, Op: Read, Length: 512},
		{Time: 1, Op: 'X', Length: 512},
		{Time: 1, Op: Read, Length: 0},
		{Time: 1, Op: Read, Offset: 1, Length: 512},
		{Time: 1, Op: Write, Offset: -512, Length: 512},
	} {
		err := Validate([]Request{ok, bad})
		if !errors.Is(err, ErrBadTrace) || !strings.Contains(err.Error(), "request 1") {
			t.Errorf("%+v: %v", bad, err)
		}
	}
}

func TestSummarize(t *testing.T) {
	s := Summarize([]Request{{0, Read, 0, 4096}, {1, Write, 8192, 512}, {2.5, Read, 1024, 1024}})
	want := Summary{Requests: 3, Reads: 2, Writes: 1, ReadBytes: 5120, WriteBytes: 512, EndBytes: 8704, DurationSecs: 2.5}
	if s != want {
		t.Fatalf("%+v, want %+v", s, want)
	}
}
