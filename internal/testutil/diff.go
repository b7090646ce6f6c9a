package testutil

// FirstDiff returns the offset of the first byte where a and b differ, the
// shorter length when one is a prefix of the other, or -1 when they are
// equal.
func FirstDiff(a, b []byte) int {
	n := min(len(a), len(b))
	for i := range n {
		if a[i] != b[i] {
			return i
		}
	}
	if len(a) != len(b) {
		return n
	}
	return -1
}
