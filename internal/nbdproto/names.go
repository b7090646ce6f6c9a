package nbdproto

import (
	"fmt"
	"strings"
)

// codeString names a code, or prints it in hex with the family prefix.
func codeString[K ~uint16 | ~uint32](names map[K]string, k K, family string) string {
	if s, ok := names[k]; ok {
		return s
	}
	return fmt.Sprintf("%s(%#x)", family, uint32(k))
}

// flagString names the set bits of f joined by "|", unknown bits in hex.
func flagString(f uint64, names []string) string {
	if f == 0 {
		return "0"
	}
	var parts []string
	for i, n := range names {
		if f&(1<<i) != 0 {
			parts = append(parts, n)
			f &^= 1 << i
		}
	}
	if f != 0 {
		parts = append(parts, fmt.Sprintf("%#x", f))
	}
	return strings.Join(parts, "|")
}
