// Package jsontext re-encodes JSON text byte-exactly in the style of another
// implementation, so blockcache's wire output matches what SPDK's C writer or
// Python's json module would have produced for the same value.
//
// Both styles write every non-ASCII code point, and DEL (0x7f), as a \u
// escape (UTF-16 surrogate pairs above U+FFFF), write '<', '>', '&' and '/'
// verbatim (unlike encoding/json's HTML escaping), keep object members in
// their input order and copy number literals unchanged. They differ only in
// the case of the hex digits.
package jsontext

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"unicode/utf16"
	"unicode/utf8"
)

// Style selects how strings are escaped.
type Style int

const (
	// SPDK is the style of SPDK's spdk_json_write_* functions: \uXXXX with
	// upper-case hex digits.
	SPDK Style = iota
	// Python is the style of Python's json.dumps with its default
	// ensure_ascii=True: \uxxxx with lower-case hex digits.
	Python
)

// Compact re-encodes the single JSON value in src without insignificant
// whitespace, escaping strings in style s. Member order, duplicate members
// and number literals are kept as they are. It fails if src is not exactly
// one JSON value.
func Compact(src []byte, s Style) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(src))
	dec.UseNumber()
	out := make([]byte, 0, len(src)+len(src)/8)

	// stack holds, per open container, whether it is an object and how many
	// tokens (keys and values) have been written into it.
	type frame struct {
		object bool
		n      int
	}
	var stack []frame
	started := false
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			if !started || len(stack) != 0 {
				return nil, io.ErrUnexpectedEOF
			}
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		if started && len(stack) == 0 {
			return nil, errors.New("jsontext: more than one JSON value")
		}
		started = true

		if d, ok := tok.(json.Delim); ok && (d == '}' || d == ']') {
			out = append(out, byte(d))
			stack = stack[:len(stack)-1]
			continue
		}
		if n := len(stack); n > 0 {
			top := &stack[n-1]
			switch {
			case top.object && top.n%2 == 1:
				out = append(out, ':')
			case top.n > 0:
				out = append(out, ',')
			}
			top.n++
		}
		switch v := tok.(type) {
		case json.Delim:
			out = append(out, byte(v))
			stack = append(stack, frame{object: v == '{'})
		case string:
			out = AppendString(out, v, s)
		case json.Number:
			out = append(out, v...)
		case bool:
			if v {
				out = append(out, "true"...)
			} else {
				out = append(out, "false"...)
			}
		case nil:
			out = append(out, "null"...)
		default:
			return nil, fmt.Errorf("jsontext: unexpected token %T", tok)
		}
	}
}

// Indent is Compact followed by indentation as Python's json.dumps(x,
// indent=n) lays it out: one member or element per line, ": " after keys,
// and "{}" / "[]" for empty containers. There is no trailing newline.
func Indent(src []byte, s Style, n int) ([]byte, error) {
	c, err := Compact(src, s)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if err := json.Indent(&buf, c, "", string(bytes.Repeat([]byte(" "), n))); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// AppendString appends str as a quoted JSON string escaped in style s.
// Invalid UTF-8 is written as U+FFFD.
func AppendString(dst []byte, str string, s Style) []byte {
	hex := "0123456789ABCDEF"
	if s == Python {
		hex = "0123456789abcdef"
	}
	u4 := func(dst []byte, r rune) []byte {
		return append(dst, '\\', 'u', hex[r>>12&0xf], hex[r>>8&0xf], hex[r>>4&0xf], hex[r&0xf])
	}
	dst = append(dst, '"')
	for i := 0; i < len(str); {
		c := str[i]
		if c < utf8.RuneSelf {
			i++
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				if c < 0x20 || c == 0x7f {
					dst = u4(dst, rune(c))
				} else {
					dst = append(dst, c)
				}
			}
			continue
		}
		r, size := utf8.DecodeRuneInString(str[i:])
		i += size
		if r > 0xffff {
			hi, lo := utf16.EncodeRune(r)
			dst = u4(u4(dst, hi), lo)
		} else {
			dst = u4(dst, r)
		}
	}
	return append(dst, '"')
}
