// Package errinj injects faults into a bdev.Device, after pebble's
// vfs/errorfs: Wrap asks an Injector before each call whether it should fail
// (or corrupt data), and small composable injectors and predicates describe
// which calls: the third write, writes overlapping an LBA range, one read in
// a thousand, the next five flushes, only while a toggle is on. A Counter
// tells a test how many faults were injected, so it can check that each one
// reached the caller (an NBD reply, an RPC answer).
//
// SPDKInjector gives the semantics of SPDK's error bdev and its
// bdev_error_inject_error RPC on top of the same machinery, and Remove
// simulates a disk that disappears.
package errinj

import "fmt"

// OpKind is the kind of a device call.
type OpKind uint8

// The op kinds, one per bdev.Device IO method.
const (
	OpRead OpKind = iota
	OpWrite
	OpFlush
	OpDiscard
	OpWriteZeroes
	numOpKinds
)

var opNames = [numOpKinds]string{OpRead: "read", OpWrite: "write", OpFlush: "flush", OpDiscard: "discard", OpWriteZeroes: "write-zeroes"}

// String returns the name bdev.IOError uses for the op: "read", "write",
// "flush", "discard" or "write-zeroes".
func (k OpKind) String() string {
	if k < numOpKinds {
		return opNames[k]
	}
	return fmt.Sprintf("OpKind(%d)", uint8(k))
}

// Op is one device call as injectors see it. Offset and Len are in bytes;
// a flush has no range (both zero).
type Op struct {
	Kind   OpKind
	Offset int64
	Len    int64
}

// String returns e.g. "write 4096+512".
func (o Op) String() string {
	if o.Kind == OpFlush {
		return o.Kind.String()
	}
	return fmt.Sprintf("%v %d+%d", o.Kind, o.Offset, o.Len)
}
