package nbdproto

import (
	"encoding/binary"
	"fmt"
)

// TxFlags are the 16 transmission flags describing an export to a client.
type TxFlags uint16

// Transmission flags.
const (
	TxHasFlags        TxFlags = 1 << 0
	TxReadOnly        TxFlags = 1 << 1
	TxSendFlush       TxFlags = 1 << 2
	TxSendFUA         TxFlags = 1 << 3
	TxRotational      TxFlags = 1 << 4
	TxSendTrim        TxFlags = 1 << 5
	TxSendWriteZeroes TxFlags = 1 << 6
	TxSendDF          TxFlags = 1 << 7
	TxCanMultiConn    TxFlags = 1 << 8
	TxSendResize      TxFlags = 1 << 9
	TxSendCache       TxFlags = 1 << 10
	TxSendFastZero    TxFlags = 1 << 11
)

var txFlagNames = [...]string{
	"HAS_FLAGS", "READ_ONLY", "SEND_FLUSH", "SEND_FUA", "ROTATIONAL", "SEND_TRIM",
	"SEND_WRITE_ZEROES", "SEND_DF", "CAN_MULTI_CONN", "SEND_RESIZE", "SEND_CACHE",
	"SEND_FAST_ZERO",
}

func (f TxFlags) String() string { return flagString(uint64(f), txFlagNames[:]) }

// Command is the type of a transmission request.
type Command uint16

// Commands.
const (
	CmdRead        Command = 0
	CmdWrite       Command = 1
	CmdDisc        Command = 2
	CmdFlush       Command = 3
	CmdTrim        Command = 4
	CmdCache       Command = 5
	CmdWriteZeroes Command = 6
	CmdBlockStatus Command = 7
	CmdResize      Command = 8
)

var commandNames = map[Command]string{
	CmdRead: "NBD_CMD_READ", CmdWrite: "NBD_CMD_WRITE", CmdDisc: "NBD_CMD_DISC",
	CmdFlush: "NBD_CMD_FLUSH", CmdTrim: "NBD_CMD_TRIM", CmdCache: "NBD_CMD_CACHE",
	CmdWriteZeroes: "NBD_CMD_WRITE_ZEROES", CmdBlockStatus: "NBD_CMD_BLOCK_STATUS",
	CmdResize: "NBD_CMD_RESIZE",
}

func (c Command) String() string { return codeString(commandNames, c, "NBD_CMD") }

// CmdFlags are the 16 command flags of a request.
type CmdFlags uint16

// Command flags.
const (
	CmdFlagFUA      CmdFlags = 1 << 0
	CmdFlagNoHole   CmdFlags = 1 << 1
	CmdFlagDF       CmdFlags = 1 << 2
	CmdFlagReqOne   CmdFlags = 1 << 3
	CmdFlagFastZero CmdFlags = 1 << 4
)

var cmdFlagNames = [...]string{"FUA", "NO_HOLE", "DF", "REQ_ONE", "FAST_ZERO"}

func (f CmdFlags) String() string { return flagString(uint64(f), cmdFlagNames[:]) }

// RequestLen is the length of a request header; a WRITE's data follows it.
const RequestLen = 28

// Request is a transmission request header. The cookie (called handle
// before proto.md renamed it) is the client's; replies echo it.
type Request struct {
	Flags  CmdFlags
	Type   Command
	Cookie uint64
	Offset uint64
	Length uint32
}

// PutRequest encodes r into b, at least RequestLen long.
func PutRequest(b []byte, r Request) {
	binary.BigEndian.PutUint32(b[0:4], MagicRequest)
	binary.BigEndian.PutUint16(b[4:6], uint16(r.Flags))
	binary.BigEndian.PutUint16(b[6:8], uint16(r.Type))
	binary.BigEndian.PutUint64(b[8:16], r.Cookie)
	binary.BigEndian.PutUint64(b[16:24], r.Offset)
	binary.BigEndian.PutUint32(b[24:28], r.Length)
}

// ParseRequest decodes a request header. It fails only on a bad magic;
// whether the request makes sense is for the server to judge.
func ParseRequest(b *[RequestLen]byte) (Request, error) {
	if m := binary.BigEndian.Uint32(b[0:4]); m != MagicRequest {
		return Request{}, fmt.Errorf("request magic %#08x: %w", m, ErrBadMagic)
	}
	return Request{
		Flags:  CmdFlags(binary.BigEndian.Uint16(b[4:6])),
		Type:   Command(binary.BigEndian.Uint16(b[6:8])),
		Cookie: binary.BigEndian.Uint64(b[8:16]),
		Offset: binary.BigEndian.Uint64(b[16:24]),
		Length: binary.BigEndian.Uint32(b[24:28]),
	}, nil
}
