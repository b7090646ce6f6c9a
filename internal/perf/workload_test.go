package perf

import (
	"errors"
	"strings"
	"testing"
)

func TestParseWorkload(t *testing.T) {
	for w, name := range workloadNames {
		got, err := ParseWorkload(name)
		if err != nil || got != Workload(w) {
			t.Errorf("ParseWorkload(%q) = %v, %v; want %v", name, got, err, Workload(w))
		}
		if got.String() != name {
			t.Errorf("%v.String() = %q, want %q", got, got.String(), name)
		}
	}
	for _, bad := range []string{"", "Read", "reset", "randomread", "write-zeroes"} {
		_, err := ParseWorkload(bad)
		if !errors.Is(err, ErrInvalidOption) || !strings.Contains(err.Error(), "randrw") {
			t.Errorf("ParseWorkload(%q) = %v; want ErrInvalidOption listing the workloads", bad, err)
		}
	}
}

func TestParseSize(t *testing.T) {
	good := map[string]int64{
		"4096": 4096, "512": 512, "4k": 4096, "4K": 4096, "4KB": 4096, "4kb": 4096,
		"64k": 65536, "1m": 1 << 20, "1M": 1 << 20, "1MB": 1 << 20, "128M": 128 << 20,
	}
	for s, want := range good {
		got, err := ParseSize(s)
		if err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", s, got, err, want)
		}
	}
	bad := map[string]string{
		"":                     "want a number",
		"k":                    "want a number",
		"-4k":                  "want a number",
		" 4k":                  "want a number",
		"0":                    "must be positive",
		"0k":                   "must be positive",
		"4x":                   `unknown unit "x"`,
		"4kib":                 `unknown unit "kib"`,
		"4k ":                  `unknown unit "k "`,
		"4t":                   `unknown unit "t"`,
		"129m":                 "more than the 134217728 bytes",
		"1g":                   "more than the 134217728 bytes",
		"99999999999999999999": "IO size",
	}
	for s, want := range bad {
		_, err := ParseSize(s)
		if !errors.Is(err, ErrInvalidOption) || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseSize(%q) = %v; want ErrInvalidOption with %q", s, err, want)
		}
	}
}

// FuzzParseSize: any input either fails with ErrInvalidOption or gives a
// size in 1..MaxIOSize whose decimal digits start the input.
func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"4096", "4k", "4KB", "1m", "1g", "", "k", "0", "18446744073709551616", "4kbb"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseSize(s)
		if err != nil {
			if !errors.Is(err, ErrInvalidOption) {
				t.Fatalf("ParseSize(%q): %v does not wrap ErrInvalidOption", s, err)
			}
			return
		}
		if n <= 0 || n > MaxIOSize {
			t.Fatalf("ParseSize(%q) = %d, outside 1..%d", s, n, MaxIOSize)
		}
		if s == "" || s[0] < '0' || s[0] > '9' {
			t.Fatalf("ParseSize(%q) = %d, accepted input not starting with a digit", s, n)
		}
	})
}
