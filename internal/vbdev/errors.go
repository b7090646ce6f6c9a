package vbdev

import "errors"

// Sentinel errors. The RPC layer maps them to SPDK's codes in one place.
var (
	// ErrNameExists: the vbdev name is taken by a bdev, alias or vbdev
	// (SPDK answers EPERM).
	ErrNameExists = errors.New("name already exists")
	// ErrInvalidParam: a bad mode, line size, or a value conflicting with the
	// shared cache (EINVAL).
	ErrInvalidParam = errors.New("invalid parameter")
	// ErrNoSuchVbdev: no OCF vbdev has that name (ENODEV).
	ErrNoSuchVbdev = errors.New("no such OCF vbdev")
	// ErrNotStarted: the vbdev waits for a base bdev, so it has no cache yet.
	ErrNotStarted = errors.New("vbdev not started")
	// ErrForeignCache: the cache device holds another cache (or metadata
	// that cannot be read); only force reinitialises it.
	ErrForeignCache = errors.New("cache device holds another cache")
)
