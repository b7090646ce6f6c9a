package cpumask

import "testing"

func TestDefaultProcs(t *testing.T) {
	for _, tc := range []struct{ available, want int }{{1, 1}, {2, 1}, {3, 1}, {4, 2}, {16, 8}, {0, 1}} {
		if got := DefaultProcs(tc.available); got != tc.want {
			t.Errorf("DefaultProcs(%d) = %d, want %d", tc.available, got, tc.want)
		}
	}
}
