package ocf

import "errors"

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
