package testutil

import "fmt"

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

// DescribeDiff says where got first differs from want, with the 512-byte
// sector and both bytes, or "equal".
func DescribeDiff(got, want []byte) string {
	if len(got) != len(want) {
		return fmt.Sprintf("length %d, want %d", len(got), len(want))
	}
	i := FirstDiff(got, want)
	if i < 0 {
		return "equal"
	}
	return fmt.Sprintf("first difference at byte %d (sector %d): got %#02x want %#02x", i, i/SectorSize, got[i], want[i])
}
