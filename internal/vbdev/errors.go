package vbdev

import "errors"

// Errors name each thing once (see the ocf package's errors.go): a Manager
// method names its operation and the vbdev (`delete OCF vbdev "Vol": ...`),
// the steps below it add only what their callee did not say, and the
// engine and the registry name the cores, caches and devices. A start's
// failure, kept as the vbdev's reason, does not name the vbdev.

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
	// ErrNotBlank: the cache device holds no cache metadata but is not
	// blank: the remains of a cache whose superblocks are lost, or a file
	// system, swap, volume manager, RAID or partition table signature;
	// only force initialises it (EEXIST, as for another cache).
	ErrNotBlank = errors.New("cache device is not blank")
	// ErrCoreMismatch: the core bdev is not the device the cache's
	// metadata recorded under its name: its size or identity differ
	// (EINVAL).
	ErrCoreMismatch = errors.New("core device is not the one the cache recorded")
)
