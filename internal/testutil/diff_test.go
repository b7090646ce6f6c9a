package testutil

import "testing"

func TestFirstDiff(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want int
	}{
		{"abc", "abc", -1},
		{"", "", -1},
		{"abc", "abd", 2},
		{"abc", "ab", 2},
		{"x", "yz", 0},
	} {
		if got := FirstDiff([]byte(tc.a), []byte(tc.b)); got != tc.want {
			t.Errorf("FirstDiff(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
	}
}

func TestDescribeDiff(t *testing.T) {
	got := make([]byte, 1024)
	want := make([]byte, 1024)
	if s := DescribeDiff(got, want); s != "equal" {
		t.Fatalf("equal slices: %q", s)
	}
	got[600] = 0xab
	if s, w := DescribeDiff(got, want), "first difference at byte 600 (sector 1): got 0xab want 0x00"; s != w {
		t.Fatalf("DescribeDiff = %q, want %q", s, w)
	}
	if s, w := DescribeDiff(got[:3], want), "length 3, want 1024"; s != w {
		t.Fatalf("DescribeDiff = %q, want %q", s, w)
	}
}
