package ocf

import (
	"errors"
	"fmt"

	"blockcache/internal/bdev"
)

// Error messages name each thing once, as Go's os package does: the
// function that fails names its operation and its object (os.Open says
// "open /path: permission denied"), and its caller adds only what the
// callee could not know, the larger operation or what the IO was for,
// never the callee's names again. A device names itself in its IO errors
// (bdev.IOError: "Cache write at offset 131072 length 512: ..."), so the
// engine says what the IO was for ("write cache metadata: ...") and not
// which device it went to. Management operations name their object (the
// cache device, a core by its core device's name: `remove core "Core"`);
// the data path names the volume (`Vol read at 4096: core device: ...`).
// Sentinels are wrapped with %w, so errors.Is finds them through any chain.

// Sentinel errors of the engine. Every error the engine returns wraps at most
// one of them (or a bdev error from the device that failed).
var (
	// ErrInvalidConfig is returned for a bad line size, mode or policy value.
	ErrInvalidConfig = errors.New("invalid cache configuration")
	// ErrCacheTooSmall is returned when the cache device cannot hold a line.
	ErrCacheTooSmall = errors.New("cache device too small")
	// ErrCoreExists is returned when adding a core id or name already present.
	ErrCoreExists = errors.New("core already exists")
	// ErrNoSuchCore is returned for a core that is not part of the cache.
	ErrNoSuchCore = errors.New("no such core")
	// ErrStopped is returned by IO on a core that was removed or a cache that
	// was stopped.
	ErrStopped = errors.New("cache stopped")
	// ErrDirtyUnreadable is returned when dirty data cannot be read from the
	// cache device; the request fails rather than return stale core data.
	ErrDirtyUnreadable = errors.New("dirty data unreadable on cache device")
	// ErrFlushCancelled is returned by a flush whose context was cancelled
	// before it had written back all it set out to.
	ErrFlushCancelled = errors.New("flush cancelled")
)

// onDevice wraps err, the failure of operation op on dev, naming dev unless
// err is an IO error of dev, which names it already: `load cache "Cache":
// metadata region: ...` but `load cache: Cache read at offset 0 ...`.
func onDevice(op string, dev bdev.Device, err error) error {
	name := dev.Info().Name
	if ioe, ok := errors.AsType[*bdev.IOError](err); ok && ioe.Dev == name {
		return fmt.Errorf("%s: %w", op, err)
	}
	return fmt.Errorf("%s %q: %w", op, name, err)
}
