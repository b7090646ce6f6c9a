package nbdremote

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"

	"blockcache/internal/nbdproto"
)

// FuzzReply feeds arbitrary bytes to the reply parser with three requests
// in flight (a read, a write, a flush): it must never panic, never write
// outside a read's buffer, and fail only with protocol or stream errors.
func FuzzReply(f *testing.F) {
	simple := func(errno uint32, cookie uint64, payload []byte) []byte {
		b := make([]byte, 16, 16+len(payload))
		binary.BigEndian.PutUint32(b, nbdproto.MagicSimpleReply)
		binary.BigEndian.PutUint32(b[4:], errno)
		binary.BigEndian.PutUint64(b[8:], cookie)
		return append(b, payload...)
	}
	chunk := func(flags uint16, typ nbdproto.ReplyType, cookie uint64, payload []byte) []byte {
		b := make([]byte, 20, 20+len(payload))
		binary.BigEndian.PutUint32(b, nbdproto.MagicStructuredReply)
		binary.BigEndian.PutUint16(b[4:], flags)
		binary.BigEndian.PutUint16(b[6:], uint16(typ))
		binary.BigEndian.PutUint64(b[8:], cookie)
		binary.BigEndian.PutUint32(b[16:], uint32(len(payload)))
		return append(b, payload...)
	}
	data := binary.BigEndian.AppendUint64(nil, 4096)
	data = append(data, make([]byte, 512)...)
	hole := binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint64(nil, 4096+512), 512)
	errc := append(binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint32(nil, 5), 3), "bad"...)
	f.Add(simple(0, 1, make([]byte, 1024)))
	f.Add(append(simple(0, 2, nil), simple(5, 3, nil)...))
	f.Add(append(append(chunk(0, nbdproto.ReplyTypeOffsetData, 1, data), chunk(0, nbdproto.ReplyTypeOffsetHole, 1, hole)...), chunk(nbdproto.ReplyFlagDone, nbdproto.ReplyTypeNone, 1, nil)...))
	f.Add(chunk(nbdproto.ReplyFlagDone, nbdproto.ReplyTypeError, 2, errc))
	f.Add(chunk(nbdproto.ReplyFlagDone, nbdproto.ReplyTypeErrorOffset, 1, binary.BigEndian.AppendUint64(errc, 4096)))
	f.Fuzz(func(t *testing.T, stream []byte) {
		reqs := []*request{
			{idx: 1, cmd: nbdproto.CmdRead, off: 4096, buf: make([]byte, 1024+64)[:1024:1024], structuredRead: true},
			{idx: 2, cmd: nbdproto.CmdWrite, off: 0},
			{idx: 3, cmd: nbdproto.CmdFlush},
		}
		guard := reqs[0].buf[:cap(reqs[0].buf)]
		rr := replyReader{r: bytes.NewReader(stream), structured: true, lookup: func(c uint64) *request {
			for _, r := range reqs {
				if r.cookie() == c && r.state == stateInflight {
					return r
				}
			}
			return nil
		}}
		for _, r := range reqs {
			r.state = stateInflight
		}
		for {
			req, done, err := rr.next()
			if err != nil {
				if !errors.Is(err, ErrProtocol) && !errors.Is(err, io.EOF) {
					t.Fatalf("error %v is neither a protocol error nor the end of the stream", err)
				}
				break
			}
			if done {
				req.state = stateDone
			}
		}
		if len(guard) != 1024 {
			t.Fatal("read buffer grew")
		}
	})
}

// FuzzHandshake runs the client's negotiation against arbitrary server
// bytes: no panic, and an accepted export is a valid one.
func FuzzHandshake(f *testing.F) {
	var g bytes.Buffer
	binary.Write(&g, binary.BigEndian, nbdproto.MagicNBD)
	binary.Write(&g, binary.BigEndian, nbdproto.MagicOption)
	binary.Write(&g, binary.BigEndian, nbdproto.FlagFixedNewstyle|nbdproto.FlagNoZeroes)
	rep := func(opt nbdproto.Option, typ nbdproto.RepType, data []byte) {
		binary.Write(&g, binary.BigEndian, nbdproto.MagicOptionReply)
		binary.Write(&g, binary.BigEndian, opt)
		binary.Write(&g, binary.BigEndian, typ)
		binary.Write(&g, binary.BigEndian, uint32(len(data)))
		g.Write(data)
	}
	rep(nbdproto.OptStructuredReply, nbdproto.RepAck, nil)
	info := binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint16(nil, uint16(nbdproto.InfoExport)), 1<<20), uint16(nbdproto.TxHasFlags|nbdproto.TxSendFlush))
	rep(nbdproto.OptGo, nbdproto.RepInfo, info)
	bs := binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint16(nil, uint16(nbdproto.InfoBlockSize)), 1), 4096), 1<<25)
	rep(nbdproto.OptGo, nbdproto.RepInfo, bs)
	rep(nbdproto.OptGo, nbdproto.RepAck, nil)
	f.Add(g.Bytes())
	f.Add(g.Bytes()[:40])
	f.Fuzz(func(t *testing.T, server []byte) {
		ex, err := negotiate(bytes.NewReader(server), io.Discard, "disk")
		if err != nil {
			return
		}
		if ex.flags&nbdproto.TxHasFlags == 0 {
			t.Fatalf("accepted flags %v without HAS_FLAGS", ex.flags)
		}
		bs, n, maxPayload, err := ex.geometry()
		if err != nil {
			return
		}
		if bs < 512 || bs&(bs-1) != 0 || n == 0 || maxPayload < bs || maxPayload%bs != 0 {
			t.Fatalf("geometry %d blocks of %d, payload %d from %+v", n, bs, maxPayload, ex)
		}
	})
}
