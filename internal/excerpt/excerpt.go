// Package excerpt shortens untrusted text before it is quoted back in an
// error message or a log line, so that a client sending a megabyte-long name
// gets a message of a few hundred bytes, not its megabyte back.
package excerpt

import (
	"strconv"
	"unicode/utf8"
)

// MaxBytes is how much of a value Quote keeps.
const MaxBytes = 64

// Quote returns s as a Go-quoted string when it is at most MaxBytes long.
// A longer s keeps its first MaxBytes bytes (cut at a rune boundary), then
// says how long it was: "abc…"… (1048576 bytes). Unprintable bytes are
// escaped, so the result is at most 4*MaxBytes+32 bytes whatever s holds.
func Quote(s string) string {
	if len(s) <= MaxBytes {
		return strconv.Quote(s)
	}
	return long(s[:cut(s, MaxBytes)], len(s))
}

// Bytes is Quote for a byte slice; it copies at most MaxBytes+4 bytes.
func Bytes(b []byte) string {
	if len(b) <= MaxBytes {
		return strconv.Quote(string(b))
	}
	head := string(b[:min(len(b), MaxBytes+utf8.UTFMax)])
	return long(head[:cut(head, MaxBytes)], len(b))
}

func long(head string, total int) string {
	return strconv.Quote(head) + "… (" + strconv.Itoa(total) + " bytes)"
}

// Text bounds a whole message to about max bytes: a longer s keeps its
// head and its tail (where wrapped errors put the cause) around a marker
// saying how much was cut. It is the backstop for messages built from
// values nobody quoted with Quote.
func Text(s string, max int) string {
	if len(s) <= max {
		return s
	}
	head := cut(s, max*5/8)
	tail := len(s) - max*3/8
	for tail < len(s) && !utf8.RuneStart(s[tail]) {
		tail++
	}
	return s[:head] + " …[" + strconv.Itoa(tail-head) + " bytes cut]… " + s[tail:]
}

// cut returns the largest n' <= n such that s[:n'] ends on a rune boundary.
func cut(s string, n int) int {
	if n >= len(s) {
		return len(s)
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return n
}
