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
