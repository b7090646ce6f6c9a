package nbdproto

import (
	"encoding/binary"
	"errors"
	"testing"
)

// FuzzParse feeds arbitrary bytes to every header parser: each either
// refuses them with ErrBadMagic or returns a header that encodes back to
// the same bytes.
func FuzzParse(f *testing.F) {
	var b [RequestLen]byte
	PutRequest(b[:], Request{Type: CmdRead, Cookie: 1, Length: 4096})
	f.Add(b[:])
	PutChunk(b[:], Chunk{Flags: ReplyFlagDone, Type: ReplyTypeError, Cookie: 2, Length: 9})
	f.Add(b[:ChunkLen])
	PutOptionReply(b[:], OptionReplyHeader{Option: OptGo, Type: RepInfo, Length: 12})
	f.Add(b[:OptionReplyLen])
	f.Add(AppendOption(nil, OptStructuredReply, nil))
	f.Add([]byte("not a header at all, just some bytes"))
	f.Fuzz(func(t *testing.T, in []byte) {
		in = append(in, make([]byte, RequestLen)...)
		out := make([]byte, RequestLen)
		check := func(name string, n int, err error, put func()) {
			if err != nil {
				if !errors.Is(err, ErrBadMagic) {
					t.Fatalf("%s: %v is not ErrBadMagic", name, err)
				}
				return
			}
			put()
			if string(out[:n]) != string(in[:n]) {
				t.Fatalf("%s: %x encodes back to %x", name, in[:n], out[:n])
			}
		}
		r, err := ParseRequest((*[RequestLen]byte)(in))
		check("request", RequestLen, err, func() { PutRequest(out, r) })
		s, err := ParseSimpleReply((*[SimpleReplyLen]byte)(in))
		check("simple reply", SimpleReplyLen, err, func() { PutSimpleReply(out, s) })
		c, err := ParseChunk((*[ChunkLen]byte)(in))
		check("chunk", ChunkLen, err, func() { PutChunk(out, c) })
		or, err := ParseOptionReply((*[OptionReplyLen]byte)(in))
		check("option reply", OptionReplyLen, err, func() { PutOptionReply(out, or) })
		o, err := ParseOption((*[OptionLen]byte)(in))
		check("option", OptionLen, err, func() {
			copy(out, binary.BigEndian.AppendUint32(AppendOption(nil, o.Option, nil)[:12], o.Length))
		})
	})
}
