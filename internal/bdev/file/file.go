// Package file provides SPDK's aio bdev: a block device over a regular file
// or a host block device, doing synchronous positioned IO (pread, pwrite)
// from the calling goroutine. Go runs each blocking call on its own thread,
// so many goroutines issuing IO get real queue depth without an event loop;
// a per-device queue depth bounds those threads (see Options.QueueDepth).
//
// Ownership: a device holds its file for itself alone, for its whole life,
// with an open file description lock and, on a block device, O_EXCL (see
// openExclusive). A second opener, here or in another process, gets an
// error wrapping ErrInUse that names the holder where it can be found.
//
// Atomicity: overlapping concurrent writes are applied by the kernel. For a
// regular file opened without Direct the inode lock serializes them, so no
// block is torn. With Direct or on a block device only the device's logical
// sector is guaranteed atomic; callers that write overlapping ranges
// concurrently must serialize them, as the cache engine does per cache line.
package file

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"golang.org/x/sys/unix"

	"blockcache/internal/bdev"
	"blockcache/internal/bdev/uring"
	"blockcache/internal/poller"
)

// ProductName is the product name file devices report, as SPDK's aio bdev.
const ProductName = "AIO disk"

// Options configures Open.
type Options struct {
	// BlockSize is the device's block size in bytes. 0 detects it: the
	// logical block size (BLKSSZGET) of a block device; for a regular file
	// 512, or with Direct the file system's direct-IO offset alignment
	// (statx STATX_DIOALIGN) if larger. A non-zero value must be a multiple
	// of 512 and of the detected value.
	BlockSize uint32
	// ReadOnly opens the file read-only; writes, discards and write-zeroes
	// then fail with an error wrapping syscall.EROFS.
	ReadOnly bool
	// Direct opens with O_DIRECT, bypassing the page cache. Callers'
	// buffers need no alignment: unaligned ones go through a bounce buffer,
	// aligned ones (see Device.MemAlign) are used as they are.
	Direct bool
	// BufferedFallback, with Direct, opens the file buffered instead where
	// its file system refuses O_DIRECT (EINVAL at open: ramfs, tmpfs before
	// Linux 6.6, some FUSE file systems), or where a regular file's direct
	// IO needs a coarser alignment (statx STATX_DIOALIGN, e.g. 4096 on a
	// 4Kn disk) than BlockSize, or 512 when BlockSize is 0: the block size
	// is kept, so that a cache created on the file still opens. Device.Direct
	// then reports false and Device.DirectRefused why.
	BufferedFallback bool
	// Create creates path as a sparse file of Size bytes if it does not
	// exist. An existing file is opened as it is.
	Create bool
	// Size is the size of a file made by Create, in bytes.
	Size int64
	// UUID is the device's identity; zero picks a random one.
	UUID uuid.UUID
	// QueueDepth bounds the IOs in system calls at once, each of which
	// holds an OS thread while it blocks; further IOs wait in Go (a parked
	// goroutine, no thread) until one ends. 0 means DefaultQueueDepth.
	QueueDepth int
	// Engine is how IO reaches the kernel: EngineSync (the zero value)
	// or EngineUring, with a ring of QueueDepth entries.
	Engine Engine
	// Poll is EngineUring's completion poll budget (uring.Options.Poll):
	// with IO in flight the ring's completion goroutine polls for up to
	// this long before it sleeps. Zero never polls. EngineSync ignores it.
	Poll time.Duration
	// Pollers is EngineUring's completion check set (uring.Options.Pollers).
	Pollers *poller.Set
}

// DefaultQueueDepth is the queue depth of a device opened with none given:
// SPDK's aio bdev's (SPDK_AIO_QUEUE_DEPTH).
const DefaultQueueDepth = 128

// Device is a block device over an open file descriptor. It is safe for
// concurrent use.
type Device struct {
	info       bdev.Info
	path       string
	readOnly   bool
	direct     bool
	refused    error // why O_DIRECT was not used though asked for; nil if it was
	blockDev   bool  // path is a block device, not a regular file
	memAlign   int   // buffer address alignment Direct IO needs; see MemAlign
	bounceSize int   // bytes per bounce buffer: whole blocks, about 1 MiB
	sys        sysCalls
	stopRing   func() error // closes EngineUring's ring; nil otherwise

	// slots has one element per IO in its system calls: an IO sends before
	// its first call and receives after its last (begin, end), so at most
	// cap(slots) threads block in this device's calls.
	slots chan struct{}

	// mu makes Close wait for in-flight IO: every IO holds it shared for the
	// whole of its system calls, Close holds it exclusively. fd is -1 after
	// Close and written only by Close.
	mu sync.RWMutex
	fd int

	bounce       *bouncePool // bounceSize bytes, aligned; Direct only
	zeroesOnce   sync.Once
	zeroes       []byte      // aligned, bounceSize bytes, never written; see zeroBuf
	noZeroRange  atomic.Bool // fallocate(FALLOC_FL_ZERO_RANGE) is not supported
	noDSyncWrite atomic.Bool // pwritev2(RWF_DSYNC) is not supported
}

// Open opens path, a regular file or a block device, as a device called
// name, and holds it exclusively (a read lock with ReadOnly) until Close.
// It refuses any other kind of file at once with an error wrapping
// bdev.ErrInvalidIO, and a path another opener holds with one wrapping
// ErrInUse.
func Open(name, path string, opts Options) (*Device, error) {
	fail := func(err error) (*Device, error) {
		return nil, fmt.Errorf("open file device %q on %s: %w", name, path, err)
	}
	if opts.QueueDepth < 0 {
		return fail(fmt.Errorf("queue depth %d is negative: %w", opts.QueueDepth, bdev.ErrInvalidIO))
	}
	if opts.Create {
		if opts.ReadOnly {
			return fail(fmt.Errorf("create and read-only exclude each other: %w", bdev.ErrInvalidIO))
		}
		if err := CreateSparse(path, opts.Size); err != nil && !errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("open file device %q: %w", name, err)
		}
	}
	flags := unix.O_CLOEXEC | unix.O_RDWR
	if opts.ReadOnly {
		flags = unix.O_CLOEXEC | unix.O_RDONLY
	}
	if opts.Direct {
		flags |= unix.O_DIRECT
	}
	fd, err := openExclusive(path, flags, opts.ReadOnly)
	var refused error
	if opts.Direct && opts.BufferedFallback && errors.Is(err, unix.EINVAL) {
		refused = fmt.Errorf("file system refuses O_DIRECT: %w", err)
		opts.Direct = false
		fd, err = openExclusive(path, flags&^unix.O_DIRECT, opts.ReadOnly)
	}
	switch {
	case errors.Is(err, ErrInUse):
		return nil, fmt.Errorf("open file device %q: %w", name, err) // the error names the path
	case opts.Direct && errors.Is(err, unix.EINVAL):
		return fail(fmt.Errorf("file system does not support O_DIRECT: %w", err))
	case err != nil:
		return fail(err)
	}
	if opts.Direct && opts.BufferedFallback {
		if why := directTooCoarse(fd, opts.BlockSize); why != nil {
			unix.Close(fd)
			refused, opts.Direct = why, false
			if fd, err = openExclusive(path, flags&^unix.O_DIRECT, opts.ReadOnly); errors.Is(err, ErrInUse) {
				return nil, fmt.Errorf("open file device %q: %w", name, err)
			} else if err != nil {
				return fail(err)
			}
		}
	}
	depth := opts.QueueDepth
	if depth == 0 {
		depth = DefaultQueueDepth
	}
	d := &Device{path: path, readOnly: opts.ReadOnly, direct: opts.Direct, refused: refused, fd: fd, sys: realSysCalls,
		memAlign: 1, slots: make(chan struct{}, depth)}
	if opts.Direct {
		d.memAlign = memAlignment(fd)
	}
	info, err := d.describe(name, opts)
	if err != nil {
		unix.Close(fd)
		return fail(err)
	}
	d.info = info
	d.bounceSize = max(int(info.BlockSize), maxBounceBytes/int(info.BlockSize)*int(info.BlockSize))
	d.bounce = newBouncePool(d.bounceSize)
	if err := d.startEngine(opts.Engine, depth, uring.Options{Poll: opts.Poll, Pollers: opts.Pollers}); err != nil {
		unix.Close(fd)
		return fail(err)
	}
	return d, nil
}

// describe stats the open file and works out its size and block size.
func (d *Device) describe(name string, opts Options) (bdev.Info, error) {
	var st unix.Stat_t
	if err := unix.Fstat(d.fd, &st); err != nil {
		return bdev.Info{}, fmt.Errorf("fstat: %w", err)
	}
	var size int64
	minBlock := uint32(bdev.SectorSize)
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		size = st.Size
		if opts.Direct {
			minBlock = max(minBlock, dioAlign(d.fd))
		}
	case unix.S_IFBLK:
		d.blockDev = true
		var err error
		if size, minBlock, err = blockDevGeometry(d.fd); err != nil {
			return bdev.Info{}, err
		}
	default:
		return bdev.Info{}, fmt.Errorf("not a regular file or block device (mode %#o): %w", st.Mode&unix.S_IFMT, bdev.ErrInvalidIO)
	}
	bs := opts.BlockSize
	switch {
	case bs == 0:
		bs = minBlock
	case bs%bdev.SectorSize != 0 || bs%minBlock != 0:
		return bdev.Info{}, fmt.Errorf("block size %d is not a multiple of %d (detected minimum): %w", bs, minBlock, bdev.ErrInvalidIO)
	}
	numBlocks := uint64(size) / uint64(bs)
	if numBlocks == 0 {
		return bdev.Info{}, fmt.Errorf("size %d bytes holds no block of %d bytes: %w", size, bs, bdev.ErrInvalidIO)
	}
	id := opts.UUID
	if id == uuid.Nil {
		id = uuid.New()
	}
	return bdev.Info{Name: name, UUID: id, ProductName: ProductName, BlockSize: bs, NumBlocks: numBlocks,
		Abilities: d.abilities(st.Rdev), ReadOnly: d.readOnly}, nil
}

// Info implements bdev.Device.
func (d *Device) Info() bdev.Info { return d.info }

// Path returns the path the device was opened on.
func (d *Device) Path() string { return d.path }

// ReadOnly reports whether the device was opened read-only, as Info's
// ReadOnly does.
func (d *Device) ReadOnly() bool { return d.readOnly }

// Direct reports whether the device does its IO with O_DIRECT, bypassing
// the page cache.
func (d *Device) Direct() bool { return d.direct }

// DirectRefused returns why the device is buffered though Direct was asked
// for (Options.BufferedFallback), or nil.
func (d *Device) DirectRefused() error { return d.refused }

// MemAlign returns the buffer address alignment the device's IO needs to
// skip its bounce buffers: 1 unless Direct, else the file system's or
// device's direct-IO memory alignment, at most aligned.Page. A buffer from
// aligned.Bytes(n, aligned.Page) always qualifies.
func (d *Device) MemAlign() int { return d.memAlign }

// IsBlockDevice reports whether the device is a host block device rather
// than a regular file.
func (d *Device) IsBlockDevice() bool { return d.blockDev }

// Close implements bdev.Device: it waits for in-flight IO, then closes the
// file descriptor. A second Close returns nil.
func (d *Device) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.fd < 0 {
		return nil
	}
	err := errors.Join(d.stopEngine(), unix.Close(d.fd))
	d.fd = -1
	if err != nil {
		return fmt.Errorf("close %s (%s): %w", d.info.Name, d.path, err)
	}
	return nil
}

// ioError wraps err, the failure of an IO, with what and where.
func (d *Device) ioError(op string, off, length int64, err error) error {
	return &bdev.IOError{Op: op, Dev: d.info.Name, Offset: off, Len: length, Err: err}
}

// errReadOnly is the cause of every write-like IO on a read-only device.
var errReadOnly = fmt.Errorf("device opened read-only: %w", unix.EROFS)

// begin validates an IO, takes the shared lock and then a queue slot,
// waiting for one while the queue is full, and returns the open fd. On
// success the caller must call d.end when the IO is done.
func (d *Device) begin(op string, off, length int64, write bool) (int, error) {
	if err := bdev.CheckIO(&d.info, op, off, length); err != nil {
		return -1, err
	}
	d.mu.RLock()
	if d.fd < 0 {
		d.mu.RUnlock()
		return -1, d.ioError(op, off, length, bdev.ErrClosed)
	}
	if write && d.readOnly {
		d.mu.RUnlock()
		return -1, d.ioError(op, off, length, errReadOnly)
	}
	d.slots <- struct{}{}
	return d.fd, nil
}

// end gives back the queue slot and the shared lock begin took.
func (d *Device) end() {
	<-d.slots
	d.mu.RUnlock()
}
