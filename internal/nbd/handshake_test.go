package nbd

import (
	"bytes"
	"encoding/binary"
	"errors"
	"slices"
	"testing"

	"blockcache/internal/bdev/bdevtest"
	"blockcache/internal/nbd/nbdclient"
	"blockcache/internal/nbdproto"
)

// optErrType returns the reply type of an *OptError, failing otherwise.
func optErrType(t *testing.T, err error) uint32 {
	t.Helper()
	var oe *nbdclient.OptError
	if !errors.As(err, &oe) {
		t.Fatalf("got %v, want an option error reply", err)
	}
	return oe.Type
}

func TestHandshakeGoAdvertisesExport(t *testing.T) {
	const base = nbdclient.FlagHasFlags | nbdclient.FlagSendFlush
	plain := &hookDevice{Device: bdevtest.NewMalloc(t, "plain", 2048)} // no discard, no write-zeroes
	ts := startServer(t,
		Export{Name: "disk", Description: "the disk", Device: bdevtest.NewMalloc(t, "m0", 4096), PreferredBlockSize: 64 << 10},
		Export{Name: "ro", Device: bdevtest.NewMalloc(t, "m1", 2048), ReadOnly: true},
		Export{Name: "single", Device: bdevtest.NewMalloc(t, "m2", 2048), NoMultiConn: true},
		Export{Name: "plain", Device: plain},
	)
	rw := base | nbdclient.FlagSendFUA | nbdclient.FlagSendWriteZeroes
	for _, tc := range []struct {
		export     string
		structured bool
		size       uint64
		flags      uint16
		prefs      uint32
		desc       string
	}{
		{"disk", true, 4096 * 512, rw | nbdclient.FlagSendTrim | nbdclient.FlagCanMultiConn | nbdclient.FlagSendDF, 64 << 10, "the disk"},
		{"disk", false, 4096 * 512, rw | nbdclient.FlagSendTrim | nbdclient.FlagCanMultiConn, 64 << 10, "the disk"},
		{"ro", false, 2048 * 512, base | nbdclient.FlagReadOnly | nbdclient.FlagCanMultiConn, 4096, ""},
		{"single", false, 2048 * 512, rw | nbdclient.FlagSendTrim, 4096, ""},
		{"plain", false, 2048 * 512, rw | nbdclient.FlagCanMultiConn, 4096, ""},
	} {
		n := ts.handshake(t, stdFlags)
		if n.HandshakeFlags != nbdclient.FlagFixedNewstyle|nbdclient.FlagNoZeroes {
			t.Fatalf("handshake flags %#x", n.HandshakeFlags)
		}
		if tc.structured {
			if err := n.StructuredReplies(); err != nil {
				t.Fatal(err)
			}
		}
		c, err := n.Go(tc.export)
		if err != nil {
			t.Fatalf("%s: %v", tc.export, err)
		}
		got := c.Export
		if got.InfoTypes[0] != nbdclient.InfoExport {
			t.Errorf("%s: first info %d, want NBD_INFO_EXPORT", tc.export, got.InfoTypes[0])
		}
		if got.Size != tc.size || got.Flags != tc.flags {
			t.Errorf("%s structured=%v: size %d flags %v, want %d %v", tc.export, tc.structured,
				got.Size, nbdproto.TxFlags(got.Flags), tc.size, nbdproto.TxFlags(tc.flags))
		}
		if got.MinBlock != 512 || got.PrefBlock != tc.prefs || got.MaxBlock != 32<<20 {
			t.Errorf("%s: block sizes %d/%d/%d, want 512/%d/%d", tc.export, got.MinBlock, got.PrefBlock, got.MaxBlock, tc.prefs, 32<<20)
		}
		if got.Name != tc.export || got.Description != tc.desc {
			t.Errorf("%s: name %q description %q, want %q", tc.export, got.Name, got.Description, tc.desc)
		}
		if c.Structured != tc.structured {
			t.Errorf("%s: structured %v", tc.export, c.Structured)
		}
		// Transmission works right after the ACK.
		if err := c.ReadAt(make([]byte, 512), 0); err != nil {
			t.Fatal(err)
		}
		if err := c.Disconnect(); err != nil {
			t.Fatal(err)
		}
	}
}

func TestHandshakeExportName(t *testing.T) {
	ts := startServer(t, Export{Name: "disk", Device: bdevtest.NewMalloc(t, "m0", 1024)})
	for _, flags := range []uint32{stdFlags, nbdclient.ClientFixedNewstyle, 0} {
		// With NO_ZEROES the server must omit the 124 bytes, without it send
		// them; the client reads exactly what it expects, so a mismatch
		// desynchronises the read below.
		n := ts.handshake(t, flags)
		c, err := n.ExportName("disk")
		if err != nil {
			t.Fatalf("flags %#x: %v", flags, err)
		}
		if c.Export.Size != 1024*512 || c.Export.Flags&nbdclient.FlagHasFlags == 0 {
			t.Fatalf("flags %#x: size %d tx flags %#x", flags, c.Export.Size, c.Export.Flags)
		}
		want := bytes.Repeat([]byte{0x5a}, 4096)
		if err := c.WriteAt(want, 8192, 0); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(want))
		if err := c.ReadAt(got, 8192); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("flags %#x: read back %v, equal=%v", flags, err, bytes.Equal(got, want))
		}
		c.Close()
	}
}

func TestHandshakeList(t *testing.T) {
	ts := startServer(t,
		Export{Name: "b", Description: "second", Device: bdevtest.NewMalloc(t, "m0", 64)},
		Export{Name: "a", Description: "first", Device: bdevtest.NewMalloc(t, "m1", 64)},
	)
	n := ts.handshake(t, stdFlags)
	got, err := n.List()
	if err != nil {
		t.Fatal(err)
	}
	want := []nbdclient.ListEntry{{Name: "a", Description: "first"}, {Name: "b", Description: "second"}}
	if !slices.Equal(got, want) {
		t.Fatalf("list %v, want %v", got, want)
	}
	// LIST takes no data.
	if _, err := n.Option(nbdclient.OptList, []byte{1}); optErrType(t, err) != nbdclient.RepErrInvalid {
		t.Fatalf("LIST with data: %v", err)
	}
	// The session goes on after an INFO.
	info, err := n.Info("b")
	if err != nil || info.Description != "second" || info.Size != 64*512 {
		t.Fatalf("info: %+v %v", info, err)
	}
	if _, err := n.Go("a"); err != nil {
		t.Fatal(err)
	}
}

func TestHandshakeUnknownExport(t *testing.T) {
	ts := startServer(t, Export{Name: "disk", Device: bdevtest.NewMalloc(t, "m0", 64)})
	n := ts.handshake(t, stdFlags)
	if _, err := n.Info("nope"); optErrType(t, err) != nbdclient.RepErrUnknown {
		t.Fatalf("INFO nope: %v", err)
	}
	if _, err := n.Go("nope"); optErrType(t, err) != nbdclient.RepErrUnknown {
		t.Fatalf("GO nope: %v", err)
	}
	if _, err := n.Go("disk"); err != nil {
		t.Fatalf("GO after a refused GO: %v", err)
	}

	// NBD_OPT_EXPORT_NAME cannot be refused politely: the server hangs up.
	n = ts.handshake(t, stdFlags)
	if _, err := n.ExportName("nope"); err == nil {
		t.Fatal("EXPORT_NAME of an unknown export succeeded")
	}
	waitClosed(t, n.Conn())
}

func TestHandshakeDefaultExport(t *testing.T) {
	second := bdevtest.NewMalloc(t, "m1", 64) // created first: devices must outlive the server
	ts := startServer(t, Export{Name: "only", Device: bdevtest.NewMalloc(t, "m0", 64)})
	n := ts.handshake(t, stdFlags)
	c, err := n.Go("")
	if err != nil {
		t.Fatal(err)
	}
	if c.Export.Name != "only" {
		t.Fatalf("default export is %q, want the only one", c.Export.Name)
	}
	if err := ts.AddExport(Export{Name: "second", Device: second}); err != nil {
		t.Fatal(err)
	}
	n = ts.handshake(t, stdFlags)
	if _, err := n.Go(""); optErrType(t, err) != nbdclient.RepErrUnknown {
		t.Fatalf("empty name with two exports: %v", err)
	}
}

func TestHandshakeRefusesBadOptions(t *testing.T) {
	ts := startServer(t, Export{Name: "disk", Device: bdevtest.NewMalloc(t, "m0", 64)})
	n := ts.handshake(t, stdFlags)
	goodInfo := nbdclient.InfoData("disk", nbdclient.InfoBlockSize)
	overrun := slices.Clone(goodInfo)
	binary.BigEndian.PutUint32(overrun, 1000)
	for _, tc := range []struct {
		name string
		opt  uint32
		data []byte
		want uint32
	}{
		{"unknown option", 99, []byte("whatever"), nbdclient.RepErrUnsup},
		{"STARTTLS", nbdclient.OptStartTLS, nil, nbdclient.RepErrUnsup},
		{"SET_META_CONTEXT", nbdclient.OptSetMetaContext, []byte{0, 0, 0, 0, 0, 0, 0, 0}, nbdclient.RepErrUnsup},
		{"LIST_META_CONTEXT", nbdclient.OptListMetaContext, nil, nbdclient.RepErrUnsup},
		{"INFO too short", nbdclient.OptInfo, []byte{0, 0, 0}, nbdclient.RepErrInvalid},
		{"INFO name overruns", nbdclient.OptInfo, overrun, nbdclient.RepErrInvalid},
		{"INFO count mismatch", nbdclient.OptInfo, goodInfo[:len(goodInfo)-1], nbdclient.RepErrInvalid},
		{"GO trailing byte", nbdclient.OptGo, append(slices.Clone(goodInfo), 0), nbdclient.RepErrInvalid},
		{"STRUCTURED_REPLY with data", nbdclient.OptStructuredReply, []byte{0}, nbdclient.RepErrInvalid},
		{"huge option", 42, make([]byte, maxOptionBytes+1), nbdclient.RepErrTooBig},
	} {
		if _, err := n.Option(tc.opt, tc.data); optErrType(t, err) != tc.want {
			t.Fatalf("%s: reply %v, want type %#x", tc.name, err, tc.want)
		}
	}
	// Every refused option left the stream in sync.
	c, err := n.Go("disk")
	if err != nil {
		t.Fatal(err)
	}
	if c.Structured {
		t.Fatal("structured replies on without an ACK")
	}
	if err := c.ReadAt(make([]byte, 512), 0); err != nil {
		t.Fatal(err)
	}
}

func TestHandshakeAbort(t *testing.T) {
	ts := startServer(t, Export{Name: "disk", Device: bdevtest.NewMalloc(t, "m0", 64)})
	n := ts.handshake(t, stdFlags)
	if _, err := n.Option(nbdclient.OptAbort, nil); err != nil {
		t.Fatalf("ABORT not acknowledged: %v", err)
	}
	waitClosed(t, n.Conn())
}

func TestHandshakeProtocolViolationsDisconnect(t *testing.T) {
	ts := startServer(t, Export{Name: "disk", Device: bdevtest.NewMalloc(t, "m0", 64)})
	// Unknown client flags.
	n := ts.handshake(t, stdFlags|1<<7)
	waitClosed(t, n.Conn())
	// An option without the IHAVEOPT magic.
	n = ts.handshake(t, stdFlags)
	if _, err := n.Conn().Write(make([]byte, 16)); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, n.Conn())
}

func TestHandshakeDuringShutdownIsRefused(t *testing.T) {
	ex, _ := newExport(Export{Name: "disk", Device: bdevtest.NewMalloc(t, "m0", 64)})
	cat := &fakeCatalog{ex: ex, closing: true}
	var out bytes.Buffer
	in := append(greetingReply(stdFlags), optionBytes(nbdclient.OptGo, nbdclient.InfoData("disk"))...)
	_, err := negotiate(bufioReader(in), bufioWriter(&out), cat)
	if err == nil {
		t.Fatal("negotiation succeeded during shutdown")
	}
	// Greeting (18 bytes), then one reply whose type is ERR_SHUTDOWN.
	b := out.Bytes()
	if len(b) < 18+20 || binary.BigEndian.Uint32(b[18+12:]) != uint32(nbdproto.RepErrShutdown) {
		t.Fatalf("reply %x, want NBD_REP_ERR_SHUTDOWN", b)
	}
}
