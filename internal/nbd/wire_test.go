package nbd

import (
	"encoding/binary"
	"errors"
	"fmt"
	"syscall"
	"testing"

	"blockcache/internal/bdev"
)

// The wire values are fixed by the protocol; this pins them so that an
// edit cannot slip through.
func TestWireConstantsPinned(t *testing.T) {
	for _, tc := range []struct {
		name      string
		got, want uint64
	}{
		{"NBDMAGIC", magicNBD, binary.BigEndian.Uint64([]byte("NBDMAGIC"))},
		{"IHAVEOPT", magicOption, binary.BigEndian.Uint64([]byte("IHAVEOPT"))},
		{"option reply magic", magicOptionReply, 0x3e889045565a9},
		{"request magic", uint64(magicRequest), 0x25609513},
		{"simple reply magic", uint64(magicSimpleReply), 0x67446698},
		{"structured reply magic", uint64(magicStructuredReply), 0x668e33ef},
		{"NBD_OPT_GO", uint64(optGo), 7},
		{"NBD_OPT_STRUCTURED_REPLY", uint64(optStructuredReply), 8},
		{"NBD_REP_ERR_UNKNOWN", uint64(repErrUnknown), 1<<31 + 6},
		{"NBD_REP_ERR_TOO_BIG", uint64(repErrTooBig), 1<<31 + 9},
		{"NBD_CMD_WRITE_ZEROES", uint64(cmdWriteZeroes), 6},
		{"NBD_FLAG_CAN_MULTI_CONN", uint64(txCanMultiConn), 256},
		{"NBD_REPLY_TYPE_ERROR", uint64(replyTypeError), 32769},
		{"EOVERFLOW", uint64(nbdEOVERFLOW), uint64(syscall.EOVERFLOW)},
		{"ESHUTDOWN", uint64(nbdESHUTDOWN), uint64(syscall.ESHUTDOWN)},
		{"ENOTSUP", uint64(nbdENOTSUP), uint64(syscall.ENOTSUP)},
	} {
		if tc.got != tc.want {
			t.Errorf("%s = %#x, want %#x", tc.name, tc.got, tc.want)
		}
	}
}

func TestWireNames(t *testing.T) {
	for _, tc := range []struct {
		got  fmt.Stringer
		want string
	}{
		{optGo, "NBD_OPT_GO"},
		{option(99), "NBD_OPT(0x63)"},
		{repErrUnsup, "NBD_REP_ERR_UNSUP"},
		{infoBlockSize, "NBD_INFO_BLOCK_SIZE"},
		{cmdWriteZeroes, "NBD_CMD_WRITE_ZEROES"},
		{command(42), "NBD_CMD(0x2a)"},
		{cmdFlagFUA | cmdFlagNoHole, "FUA|NO_HOLE"},
		{cmdFlags(1 << 12), "0x1000"},
		{cmdFlags(0), "0"},
		{txHasFlags | txReadOnly | txCanMultiConn, "HAS_FLAGS|READ_ONLY|CAN_MULTI_CONN"},
	} {
		if s := tc.got.String(); s != tc.want {
			t.Errorf("String() = %q, want %q", s, tc.want)
		}
	}
}

func TestParseRequest(t *testing.T) {
	var b [requestHeaderLen]byte
	copy(b[:], requestBytes(uint16(cmdWrite), uint16(cmdFlagFUA), 0x0102030405060708, 1<<40, 65536))
	r, err := parseRequest(&b)
	if err != nil {
		t.Fatal(err)
	}
	want := requestHeader{flags: cmdFlagFUA, typ: cmdWrite, handle: 0x0102030405060708, offset: 1 << 40, length: 65536}
	if r != want {
		t.Fatalf("parsed %+v, want %+v", r, want)
	}
	b[3]++
	if _, err := parseRequest(&b); !errors.Is(err, errBadMagic) {
		t.Fatalf("bad magic: %v", err)
	}
}

func TestReplyHeaders(t *testing.T) {
	b := make([]byte, structuredReplyLen)
	putSimpleReply(b, nbdEPERM, 0xabcdef)
	if got := fmt.Sprintf("%x", b[:simpleReplyLen]); got != "67446698"+"00000001"+"0000000000abcdef" {
		t.Fatalf("simple reply %s", got)
	}
	putStructuredReply(b, replyFlagDone, replyTypeOffsetData, 7, 4104)
	if got := fmt.Sprintf("%x", b); got != "668e33ef"+"0001"+"0001"+"0000000000000007"+"00001008" {
		t.Fatalf("structured reply %s", got)
	}
}

func TestErrnoFor(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want uint32
	}{
		{nil, 0},
		{errors.New("anything"), nbdEIO},
		{errReadOnly, nbdEPERM},
		{syscall.EROFS, nbdEPERM},
		{syscall.EACCES, nbdEPERM},
		{syscall.ENOMEM, nbdENOMEM},
		{errMisaligned, nbdEINVAL},
		{bdev.ErrInvalidIO, nbdEINVAL},
		{errWritePastEnd, nbdENOSPC},
		{syscall.EDQUOT, nbdENOSPC},
		{syscall.EFBIG, nbdENOSPC},
		{errTooLarge, nbdEOVERFLOW},
		{bdev.ErrNotSupported, nbdENOTSUP},
		{fmt.Errorf("x: %w", bdev.ErrClosed), nbdESHUTDOWN},
		{syscall.ESHUTDOWN, nbdESHUTDOWN},
		{&bdev.IOError{Op: "read", Err: syscall.EIO}, nbdEIO},
		{&bdev.IOError{Op: "write", Err: syscall.ENOSPC}, nbdENOSPC},
		{syscall.EBADMSG, nbdEIO}, // not an NBD value: EIO
	} {
		if got := errnoFor(tc.err); got != tc.want {
			t.Errorf("errnoFor(%v) = %d, want %d", tc.err, got, tc.want)
		}
	}
}

func TestBufferPoolClasses(t *testing.T) {
	var p bufferPool
	for _, n := range []int{1, 512, 4096, 4097, 65536, 1<<20 + 1, maxPayloadBytes} {
		b := p.get(n)
		if len(*b) != n || cap(*b) < n || cap(*b)&(cap(*b)-1) != 0 || cap(*b) < 4096 {
			t.Fatalf("get(%d): len %d cap %d", n, len(*b), cap(*b))
		}
		p.put(b)
	}
	if c := classOf(maxPayloadBytes); c != len(p.classes)-1 {
		t.Fatalf("largest payload in class %d of %d", c, len(p.classes))
	}
}
