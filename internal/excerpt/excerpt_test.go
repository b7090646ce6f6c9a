package excerpt

import (
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestQuoteShortIsQuoted(t *testing.T) {
	for _, s := range []string{"", "Malloc0", strings.Repeat("a", MaxBytes), "tab\there"} {
		if got, want := Quote(s), strconv.Quote(s); got != want {
			t.Errorf("Quote(%q) = %s, want %s", s, got, want)
		}
	}
}

func TestQuoteLongIsBounded(t *testing.T) {
	for name, s := range map[string]string{
		"ascii":     strings.Repeat("A", 1<<20),
		"multibyte": strings.Repeat("é", 1<<19), // 2 bytes each, cut mid-rune at 64
		"control":   strings.Repeat("\x00", 1<<20),
		"invalid":   strings.Repeat("\xff", 1<<20),
	} {
		t.Run(name, func(t *testing.T) {
			got := Quote(s)
			if len(got) > 4*MaxBytes+32 {
				t.Fatalf("Quote of %d bytes is %d bytes long: %s", len(s), len(got), got)
			}
			if !strings.HasSuffix(got, "… ("+strconv.Itoa(len(s))+" bytes)") {
				t.Fatalf("Quote does not give the length: %s", got)
			}
			q, err := strconv.Unquote(got[:strings.LastIndex(got, "…")])
			if err != nil {
				t.Fatalf("head of %s is not a quoted string: %v", got, err)
			}
			if !strings.HasPrefix(s, q) || len(q) > MaxBytes || len(q) < MaxBytes-utf8.UTFMax {
				t.Fatalf("head %q is not a prefix of at most %d bytes", q, MaxBytes)
			}
			if utf8.ValidString(s) && !utf8.ValidString(q) {
				t.Fatalf("head %q cuts a rune", q)
			}
			if b := Bytes([]byte(s)); b != got {
				t.Fatalf("Bytes = %s, Quote = %s", b, got)
			}
		})
	}
}

func TestTextKeepsHeadAndTail(t *testing.T) {
	if got := Text("short message", 64); got != "short message" {
		t.Fatalf("Text changed a short message: %q", got)
	}
	s := "bdev " + strings.Repeat("x", 1<<20) + ": no such device"
	got := Text(s, 256)
	if len(got) > 256+32 {
		t.Fatalf("Text gave %d bytes", len(got))
	}
	if !strings.HasPrefix(got, "bdev xxx") || !strings.HasSuffix(got, ": no such device") {
		t.Fatalf("Text lost the head or the tail: %q", got)
	}
	if !strings.Contains(got, "bytes cut]") {
		t.Fatalf("Text does not say it cut: %q", got)
	}
	u := strings.Repeat("😀", 1000)
	if got := Text(u, 101); !utf8.ValidString(got) {
		t.Fatalf("Text cut a rune: %q", got)
	}
}
