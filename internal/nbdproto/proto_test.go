package nbdproto

import (
	"encoding/binary"
	"errors"
	"fmt"
	"syscall"
	"testing"
)

// The wire values are fixed by the protocol; this pins them so that an
// edit cannot slip through.
func TestWireConstantsPinned(t *testing.T) {
	for _, tc := range []struct {
		name      string
		got, want uint64
	}{
		{"NBDMAGIC", MagicNBD, binary.BigEndian.Uint64([]byte("NBDMAGIC"))},
		{"IHAVEOPT", MagicOption, binary.BigEndian.Uint64([]byte("IHAVEOPT"))},
		{"oldstyle magic", MagicOldstyle, 0x420281861253},
		{"option reply magic", MagicOptionReply, 0x3e889045565a9},
		{"request magic", uint64(MagicRequest), 0x25609513},
		{"simple reply magic", uint64(MagicSimpleReply), 0x67446698},
		{"structured reply magic", uint64(MagicStructuredReply), 0x668e33ef},
		{"NBD_OPT_GO", uint64(OptGo), 7},
		{"NBD_OPT_STRUCTURED_REPLY", uint64(OptStructuredReply), 8},
		{"NBD_REP_ERR_UNKNOWN", uint64(RepErrUnknown), 1<<31 + 6},
		{"NBD_REP_ERR_TOO_BIG", uint64(RepErrTooBig), 1<<31 + 9},
		{"NBD_INFO_BLOCK_SIZE", uint64(InfoBlockSize), 3},
		{"NBD_CMD_WRITE_ZEROES", uint64(CmdWriteZeroes), 6},
		{"NBD_CMD_FLAG_FAST_ZERO", uint64(CmdFlagFastZero), 16},
		{"NBD_FLAG_CAN_MULTI_CONN", uint64(TxCanMultiConn), 256},
		{"NBD_FLAG_C_NO_ZEROES", uint64(FlagCNoZeroes), 2},
		{"NBD_REPLY_TYPE_ERROR", uint64(ReplyTypeError), 32769},
		{"NBD_REPLY_TYPE_ERROR_OFFSET", uint64(ReplyTypeErrorOffset), 32770},
		{"EOVERFLOW", uint64(EOVERFLOW), uint64(syscall.EOVERFLOW)},
		{"ESHUTDOWN", uint64(ESHUTDOWN), uint64(syscall.ESHUTDOWN)},
		{"ENOTSUP", uint64(ENOTSUP), uint64(syscall.ENOTSUP)},
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
		{OptGo, "NBD_OPT_GO"},
		{Option(99), "NBD_OPT(0x63)"},
		{RepErrUnsup, "NBD_REP_ERR_UNSUP"},
		{InfoBlockSize, "NBD_INFO_BLOCK_SIZE"},
		{CmdWriteZeroes, "NBD_CMD_WRITE_ZEROES"},
		{Command(42), "NBD_CMD(0x2a)"},
		{CmdFlagFUA | CmdFlagNoHole, "FUA|NO_HOLE"},
		{CmdFlags(1 << 12), "0x1000"},
		{CmdFlags(0), "0"},
		{TxHasFlags | TxReadOnly | TxCanMultiConn, "HAS_FLAGS|READ_ONLY|CAN_MULTI_CONN"},
		{ReplyTypeOffsetHole, "NBD_REPLY_TYPE_OFFSET_HOLE"},
		{ReplyType(3), "NBD_REPLY_TYPE(0x3)"},
	} {
		if s := tc.got.String(); s != tc.want {
			t.Errorf("String() = %q, want %q", s, tc.want)
		}
	}
}

// The headers' bytes, written out by hand from proto.md.
func TestHeaderBytes(t *testing.T) {
	b := make([]byte, RequestLen)
	PutRequest(b, Request{Flags: CmdFlagFUA, Type: CmdWrite, Cookie: 0x0102030405060708, Offset: 1 << 40, Length: 65536})
	if got := fmt.Sprintf("%x", b); got != "25609513"+"0001"+"0001"+"0102030405060708"+"0000010000000000"+"00010000" {
		t.Errorf("request %s", got)
	}
	PutSimpleReply(b, SimpleReply{Errno: EPERM, Cookie: 0xabcdef})
	if got := fmt.Sprintf("%x", b[:SimpleReplyLen]); got != "67446698"+"00000001"+"0000000000abcdef" {
		t.Errorf("simple reply %s", got)
	}
	PutChunk(b, Chunk{Flags: ReplyFlagDone, Type: ReplyTypeOffsetData, Cookie: 7, Length: 4104})
	if got := fmt.Sprintf("%x", b[:ChunkLen]); got != "668e33ef"+"0001"+"0001"+"0000000000000007"+"00001008" {
		t.Errorf("structured reply %s", got)
	}
	PutOptionReply(b, OptionReplyHeader{Option: OptGo, Type: RepErrUnknown, Length: 3})
	if got := fmt.Sprintf("%x", b[:OptionReplyLen]); got != "0003e889045565a9"+"00000007"+"80000006"+"00000003" {
		t.Errorf("option reply %s", got)
	}
	if got := fmt.Sprintf("%x", AppendOption(nil, OptList, []byte{9})); got != "49484156454f5054"+"00000003"+"00000001"+"09" {
		t.Errorf("option %s", got)
	}
}

// Each parser reads back what its encoder wrote and refuses a bad magic
// with ErrBadMagic.
func TestParseRoundTrip(t *testing.T) {
	req := Request{Flags: CmdFlagFUA | CmdFlagDF, Type: CmdTrim, Cookie: 1<<63 | 5, Offset: 1<<64 - 512, Length: 1<<32 - 1}
	var rb [RequestLen]byte
	PutRequest(rb[:], req)
	if got, err := ParseRequest(&rb); err != nil || got != req {
		t.Errorf("request: %+v, %v; want %+v", got, err, req)
	}
	sr := SimpleReply{Errno: ESHUTDOWN, Cookie: 42}
	var sb [SimpleReplyLen]byte
	PutSimpleReply(sb[:], sr)
	if got, err := ParseSimpleReply(&sb); err != nil || got != sr {
		t.Errorf("simple reply: %+v, %v; want %+v", got, err, sr)
	}
	ch := Chunk{Flags: ReplyFlagDone, Type: ReplyTypeErrorOffset, Cookie: 9, Length: 1 << 20}
	var cb [ChunkLen]byte
	PutChunk(cb[:], ch)
	if got, err := ParseChunk(&cb); err != nil || got != ch {
		t.Errorf("chunk: %+v, %v; want %+v", got, err, ch)
	}
	orh := OptionReplyHeader{Option: OptStartTLS, Type: RepAck}
	var ob [OptionReplyLen]byte
	PutOptionReply(ob[:], orh)
	if got, err := ParseOptionReply(&ob); err != nil || got != orh {
		t.Errorf("option reply: %+v, %v; want %+v", got, err, orh)
	}
	var oh [OptionLen]byte
	copy(oh[:], AppendOption(nil, OptGo, make([]byte, 7)))
	if got, err := ParseOption(&oh); err != nil || got != (OptionHeader{Option: OptGo, Length: 7}) {
		t.Errorf("option: %+v, %v", got, err)
	}

	rb[3]++
	sb[0]++
	cb[1]++
	ob[7]++
	oh[0]++
	for name, err := range map[string]error{
		"request":      second(ParseRequest(&rb)),
		"simple reply": second(ParseSimpleReply(&sb)),
		"chunk":        second(ParseChunk(&cb)),
		"option reply": second(ParseOptionReply(&ob)),
		"option":       second(ParseOption(&oh)),
	} {
		if !errors.Is(err, ErrBadMagic) {
			t.Errorf("%s with a bad magic: %v, want ErrBadMagic", name, err)
		}
	}
}

func second[T any](_ T, err error) error { return err }

func TestSyscallErrno(t *testing.T) {
	for v, want := range map[uint32]syscall.Errno{
		EPERM: syscall.EPERM, EIO: syscall.EIO, ENOMEM: syscall.ENOMEM, EINVAL: syscall.EINVAL,
		ENOSPC: syscall.ENOSPC, EOVERFLOW: syscall.EOVERFLOW, ENOTSUP: syscall.EOPNOTSUPP,
		ESHUTDOWN: syscall.ESHUTDOWN, 0x7fff: syscall.EIO, uint32(syscall.EBADMSG): syscall.EIO,
	} {
		if got := SyscallErrno(v); got != want {
			t.Errorf("SyscallErrno(%d) = %v, want %v", v, got, want)
		}
	}
}
