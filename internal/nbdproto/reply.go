package nbdproto

import (
	"encoding/binary"
	"fmt"
)

// ReplyFlagDone marks the last chunk of a structured reply.
const ReplyFlagDone uint16 = 1 << 0

// ReplyType is the type of a structured reply chunk. Error types have
// ReplyTypeErrorBit set; their payload starts with the error value.
type ReplyType uint16

// Structured reply chunk types.
const (
	ReplyTypeNone        ReplyType = 0
	ReplyTypeOffsetData  ReplyType = 1
	ReplyTypeOffsetHole  ReplyType = 2
	ReplyTypeBlockStatus ReplyType = 5
	ReplyTypeErrorBit    ReplyType = 1 << 15
	ReplyTypeError       ReplyType = ReplyTypeErrorBit | 1
	ReplyTypeErrorOffset ReplyType = ReplyTypeErrorBit | 2
)

var replyTypeNames = map[ReplyType]string{
	ReplyTypeNone: "NBD_REPLY_TYPE_NONE", ReplyTypeOffsetData: "NBD_REPLY_TYPE_OFFSET_DATA",
	ReplyTypeOffsetHole: "NBD_REPLY_TYPE_OFFSET_HOLE", ReplyTypeBlockStatus: "NBD_REPLY_TYPE_BLOCK_STATUS",
	ReplyTypeError: "NBD_REPLY_TYPE_ERROR", ReplyTypeErrorOffset: "NBD_REPLY_TYPE_ERROR_OFFSET",
}

func (t ReplyType) String() string { return codeString(replyTypeNames, t, "NBD_REPLY_TYPE") }

// Reply header lengths. A simple reply to a successful READ is followed by
// the data; a chunk by its Length bytes of payload.
const (
	SimpleReplyLen = 16
	ChunkLen       = 20
)

// SimpleReply is a simple reply's header.
type SimpleReply struct {
	Errno  uint32 // 0, or one of the error values (EPERM, ...)
	Cookie uint64
}

// PutSimpleReply encodes r into b, at least SimpleReplyLen long.
func PutSimpleReply(b []byte, r SimpleReply) {
	binary.BigEndian.PutUint32(b[0:4], MagicSimpleReply)
	binary.BigEndian.PutUint32(b[4:8], r.Errno)
	binary.BigEndian.PutUint64(b[8:16], r.Cookie)
}

// ParseSimpleReply decodes a simple reply header. It fails only on a bad
// magic.
func ParseSimpleReply(b *[SimpleReplyLen]byte) (SimpleReply, error) {
	if m := binary.BigEndian.Uint32(b[0:4]); m != MagicSimpleReply {
		return SimpleReply{}, fmt.Errorf("simple reply magic %#08x: %w", m, ErrBadMagic)
	}
	return SimpleReply{
		Errno:  binary.BigEndian.Uint32(b[4:8]),
		Cookie: binary.BigEndian.Uint64(b[8:16]),
	}, nil
}

// Chunk is the header of a structured reply chunk.
type Chunk struct {
	Flags  uint16 // ReplyFlagDone
	Type   ReplyType
	Cookie uint64
	Length uint32 // of the payload that follows
}

// PutChunk encodes c into b, at least ChunkLen long.
func PutChunk(b []byte, c Chunk) {
	binary.BigEndian.PutUint32(b[0:4], MagicStructuredReply)
	binary.BigEndian.PutUint16(b[4:6], c.Flags)
	binary.BigEndian.PutUint16(b[6:8], uint16(c.Type))
	binary.BigEndian.PutUint64(b[8:16], c.Cookie)
	binary.BigEndian.PutUint32(b[16:20], c.Length)
}

// ParseChunk decodes a structured reply chunk header. It fails only on a
// bad magic.
func ParseChunk(b *[ChunkLen]byte) (Chunk, error) {
	if m := binary.BigEndian.Uint32(b[0:4]); m != MagicStructuredReply {
		return Chunk{}, fmt.Errorf("structured reply magic %#08x: %w", m, ErrBadMagic)
	}
	return Chunk{
		Flags:  binary.BigEndian.Uint16(b[4:6]),
		Type:   ReplyType(binary.BigEndian.Uint16(b[6:8])),
		Cookie: binary.BigEndian.Uint64(b[8:16]),
		Length: binary.BigEndian.Uint32(b[16:20]),
	}, nil
}
