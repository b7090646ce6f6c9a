package recovery

import "errors"

// Sentinel errors. Errors returned by this package wrap at most one of
// them, with what and where in the message.
var (
	// ErrNoCache: neither superblock copy is readable and no entry sector
	// carries a cache tag; there is nothing to recover.
	ErrNoCache = errors.New("no cache metadata on the device")
	// ErrGeometry: the line size cannot be told from what is left of the
	// metadata (or the one given disagrees with the superblock).
	ErrGeometry = errors.New("cannot tell the cache geometry")
	// ErrCoreMissing: dirty data belongs to a core no device was given for.
	ErrCoreMissing = errors.New("no device for a core with dirty data")
	// ErrCoreTooSmall: a core device ends before dirty data it must take.
	ErrCoreTooSmall = errors.New("core device too small for its dirty data")
)
