package metadata

import (
	"errors"
	"fmt"
)

// Sentinel errors. Decoders return errors wrapping one of them, with the
// region that failed named in the message.
var (
	// ErrNoMetadata: the bytes do not start with Magic; the device holds no
	// cache (or was never initialised).
	ErrNoMetadata = errors.New("no cache metadata")
	// ErrVersion: a superblock of a format version this build cannot read.
	ErrVersion = errors.New("unsupported metadata format version")
	// ErrCorrupt marks metadata that fails its checksum or is inconsistent.
	// Test with IsCorrupt, which sees through any wrapping.
	ErrCorrupt = errors.New("corrupt cache metadata")
)

// corruptf returns an error wrapping ErrCorrupt.
func corruptf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrCorrupt, fmt.Sprintf(format, args...))
}

// IsCorrupt reports whether err marks corrupt metadata.
func IsCorrupt(err error) bool { return errors.Is(err, ErrCorrupt) }
