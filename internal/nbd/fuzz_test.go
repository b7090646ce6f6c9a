package nbd

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"blockcache/internal/bdev/bdevtest"
	"blockcache/internal/nbd/nbdclient"
	"blockcache/internal/nbdproto"
)

// fakeCatalog serves one export to negotiate without a Server.
type fakeCatalog struct {
	ex      *export
	closing bool
}

func (f *fakeCatalog) list() []*export { return []*export{f.ex} }
func (f *fakeCatalog) lookup(name string) *export {
	if name == f.ex.Name || name == "" {
		return f.ex
	}
	return nil
}
func (f *fakeCatalog) attach(*export) bool { return true }
func (f *fakeCatalog) shuttingDown() bool  { return f.closing }

func bufioReader(b []byte) *bufio.Reader    { return bufio.NewReader(bytes.NewReader(b)) }
func bufioWriter(w io.Writer) *bufio.Writer { return bufio.NewWriter(w) }

// greetingReply is the client's answer to the greeting.
func greetingReply(flags uint32) []byte { return binary.BigEndian.AppendUint32(nil, flags) }

// optionBytes encodes one option as a client sends it.
func optionBytes(opt uint32, data []byte) []byte {
	b := binary.BigEndian.AppendUint64(nil, nbdproto.MagicOption)
	b = binary.BigEndian.AppendUint32(b, opt)
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	return append(b, data...)
}

// requestBytes encodes a request header.
func requestBytes(typ, flags uint16, handle, off uint64, length uint32) []byte {
	b := binary.BigEndian.AppendUint32(nil, nbdproto.MagicRequest)
	b = binary.BigEndian.AppendUint16(b, flags)
	b = binary.BigEndian.AppendUint16(b, typ)
	b = binary.BigEndian.AppendUint64(b, handle)
	b = binary.BigEndian.AppendUint64(b, off)
	return binary.BigEndian.AppendUint32(b, length)
}

// FuzzRequestParse feeds arbitrary request headers to parseRequest and
// validate, and checks that whatever validate admits is safe to execute.
func FuzzRequestParse(f *testing.F) {
	f.Add(requestBytes(0, 0, 1, 0, 4096))
	f.Add(requestBytes(1, 1, 2, 512, 512))
	f.Add(requestBytes(3, 0, 3, 0, 0))
	f.Add(requestBytes(4, 1, 4, 1<<20, 1<<20))
	f.Add(requestBytes(6, 3, 5, 0, 1<<31))
	f.Add(requestBytes(0, 4, 6, 1<<64-512, 1024))
	f.Add(requestBytes(2, 0, 7, 0, 0))
	f.Add(requestBytes(99, 0xffff, 8, 7, 7))
	f.Add(requestBytes(0, 0, 9, 0, 32<<20+512))
	f.Add([]byte("not a request at all, just bytes"))

	dev := bdevtest.NewMalloc(f, "fuzz", 8192)
	var exports []*export
	for _, e := range []Export{
		{Name: "rw", Device: dev},
		{Name: "ro", Device: dev, ReadOnly: true},
		{Name: "plain", Device: &hookDevice{Device: dev}},
	} {
		ex, err := newExport(e)
		if err != nil {
			f.Fatal(err)
		}
		exports = append(exports, ex)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var b [nbdproto.RequestLen]byte
		copy(b[:], data)
		r, err := nbdproto.ParseRequest(&b)
		if err != nil {
			if binary.BigEndian.Uint32(b[:4]) == nbdproto.MagicRequest {
				t.Fatalf("good magic rejected: %v", err)
			}
			return
		}
		for _, ex := range exports {
			for _, structured := range []bool{false, true} {
				err := validate(r, ex, structured)
				if err == nil {
					checkAdmitted(t, r, ex, structured)
				} else if e := errnoFor(err); e == 0 || e == nbdproto.EIO {
					t.Fatalf("rejection %v maps to errno %d", err, e)
				}
			}
		}
	})
}

// checkAdmitted asserts what execute relies on.
func checkAdmitted(t *testing.T, r nbdproto.Request, ex *export, structured bool) {
	t.Helper()
	if r.Flags&^allowedFlags(r.Type, ex.flags, structured) != 0 {
		t.Fatalf("admitted %v with flags %v", r.Type, r.Flags)
	}
	switch r.Type {
	case nbdproto.CmdFlush:
		return
	case nbdproto.CmdWrite, nbdproto.CmdTrim, nbdproto.CmdWriteZeroes:
		if ex.ReadOnly {
			t.Fatalf("admitted %v on a read-only export", r.Type)
		}
		if r.Type == nbdproto.CmdTrim && ex.flags&nbdproto.TxSendTrim == 0 {
			t.Fatal("admitted TRIM without SEND_TRIM")
		}
	case nbdproto.CmdRead:
	default:
		t.Fatalf("admitted command %v", r.Type)
	}
	end := r.Offset + uint64(r.Length)
	if r.Length == 0 || end < r.Offset || end > ex.size || r.Offset%512 != 0 || r.Length%512 != 0 {
		t.Fatalf("admitted %v [%d,+%d) on a %d-byte export", r.Type, r.Offset, r.Length, ex.size)
	}
	if (r.Type == nbdproto.CmdRead || r.Type == nbdproto.CmdWrite) && r.Length > maxPayloadBytes {
		t.Fatalf("admitted %v of %d bytes", r.Type, r.Length)
	}
}

// FuzzHandshake runs negotiate on arbitrary client bytes: it must end
// (the input is finite), never panic, and only enter transmission with an
// export.
func FuzzHandshake(f *testing.F) {
	greet := greetingReply(stdFlags)
	seq := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	f.Add(seq(greet, optionBytes(nbdclient.OptGo, nbdclient.InfoData("disk", 0, 1, 2, 3))))
	f.Add(seq(greet, optionBytes(nbdclient.OptStructuredReply, nil), optionBytes(nbdclient.OptGo, nbdclient.InfoData(""))))
	f.Add(seq(greetingReply(0), optionBytes(nbdclient.OptExportName, []byte("disk"))))
	f.Add(seq(greet, optionBytes(nbdclient.OptList, nil), optionBytes(nbdclient.OptInfo, nbdclient.InfoData("x", 3)), optionBytes(nbdclient.OptAbort, nil)))
	f.Add(seq(greet, optionBytes(nbdclient.OptInfo, []byte{0, 0, 0, 9, 'a'}), optionBytes(77, []byte("zz"))))
	f.Add(seq(greet, optionBytes(nbdclient.OptGo, nbdclient.InfoData("disk", 9, 9, 0xffff))))
	f.Add(seq(greetingReply(0xffffffff)))
	f.Add(seq(greet, []byte("IHAVEOPT\x00\x00\x00\x07\xff\xff\xff\xff")))

	dev := bdevtest.NewMalloc(f, "fuzz", 64)
	ex, err := newExport(Export{Name: "disk", Description: "d", Device: dev})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		for _, closing := range []bool{false, true} {
			neg, err := negotiate(bufioReader(in), bufioWriter(io.Discard), &fakeCatalog{ex: ex, closing: closing})
			if err == nil && neg.ex == nil {
				t.Fatal("transmission without an export")
			}
			if err == nil && closing {
				t.Fatal("transmission during shutdown")
			}
		}
	})
}

// FuzzSession runs a whole server connection (handshake and transmission)
// on arbitrary client bytes. The connection must end once the client is
// gone, and nothing may panic (the server would recover and log an error).
func FuzzSession(f *testing.F) {
	greet := greetingReply(stdFlags)
	seq := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	goDisk := optionBytes(nbdclient.OptGo, nbdclient.InfoData("disk", 3))
	write := seq(requestBytes(1, 1, 2, 512, 1024), bytes.Repeat([]byte{0xaa}, 1024))
	f.Add(seq(greet, goDisk, requestBytes(0, 0, 1, 0, 4096), write, requestBytes(3, 0, 3, 0, 0), requestBytes(2, 0, 4, 0, 0)))
	f.Add(seq(greet, optionBytes(nbdclient.OptStructuredReply, nil), goDisk, requestBytes(0, 4, 1, 0, 512), requestBytes(6, 2, 2, 0, 65536), requestBytes(4, 0, 3, 4096, 4096)))
	f.Add(seq(greetingReply(0), optionBytes(nbdclient.OptExportName, []byte("disk")), write, requestBytes(1, 0, 5, 100, 7), []byte("1234567")))
	f.Add(seq(greet, goDisk, requestBytes(1, 0, 1, 1<<40, 600), make([]byte, 600), requestBytes(0, 0, 2, 0, 512)))
	f.Add(seq(greet, goDisk, []byte("garbage that is not a request magic")))

	f.Fuzz(func(t *testing.T, in []byte) {
		tl := &testLogger{t: t}
		s := mustNewServer(t, slog.New(tl))
		dev := bdevtest.NewMalloc(t, "fuzz", 128)
		if err := s.AddExport(Export{Name: "disk", Device: dev}); err != nil {
			t.Fatal(err)
		}
		cli, srv := net.Pipe()
		c, err := s.admit(srv)
		if err != nil {
			t.Fatalf("server refused the connection: %v", err)
		}
		go c.serve()
		drained := make(chan struct{})
		go func() { io.Copy(io.Discard, cli); close(drained) }()
		cli.Write(in)
		cli.Close()
		select {
		case <-c.done:
		case <-time.After(10 * time.Second):
			t.Fatal("connection did not end after the client left")
		}
		<-drained
		if n := tl.errorCount(); n != 0 {
			t.Fatalf("server logged errors: %v", tl.errors)
		}
	})
}
