package nbd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/bits"
	"net"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"blockcache/internal/bdev"
	"blockcache/internal/nbdproto"
)

// Export is a device offered to NBD clients under a name.
type Export struct {
	// Name is what clients ask for with NBD_OPT_GO or NBD_OPT_EXPORT_NAME:
	// at most 4096 bytes, no NUL. A client asking for the empty name gets
	// the export named "" if there is one, else the only export if there is
	// exactly one.
	Name string
	// Description is shown by clients (NBD_INFO_DESCRIPTION, NBD_OPT_LIST).
	Description string
	// Device serves the IO. The server never closes it; Shutdown flushes it.
	Device bdev.Device
	// ReadOnly advertises NBD_FLAG_READ_ONLY; writes, trims and write-zeroes
	// fail with EPERM. A Device whose Info says ReadOnly is exported so
	// whatever ReadOnly says.
	ReadOnly bool
	// PreferredBlockSize is advertised as the preferred IO size, e.g. the
	// cache line size: a power of two, at least the device block size, at
	// most 32 MiB. Zero means max(4096, device block size).
	PreferredBlockSize uint32
	// NoMultiConn withholds NBD_FLAG_CAN_MULTI_CONN. Leave it false when a
	// Flush on the device makes the writes of every connection durable, as
	// every bdev.Device does.
	NoMultiConn bool
}

// export is an Export as served: the Export itself (immutable) plus what the
// protocol derives from it once, at AddExport.
type export struct {
	Export
	size     uint64           // bytes
	minBlock uint32           // device block size; every IO is aligned to it
	prefs    uint32           // preferred block size
	flags    nbdproto.TxFlags // transmission flags, except SEND_DF which depends on the connection
	// tryRead and tryWrite are set when the device can say whether it
	// serves a READ or WRITE at once (bdev.Immediate, bdev.TryReader,
	// bdev.TryWriter): only such requests are executed inline (see
	// handleInline).
	tryRead, tryWrite bool

	// conns are the connections in transmission (or about to be) on this
	// export. Guarded by Server.mu; removed is set once by RemoveExport,
	// after which no connection attaches.
	conns   map[*conn]struct{}
	removed bool

	stats exportStats
}

// txFlagsFor returns the transmission flags sent to a connection.
// NBD_FLAG_SEND_DF is set when structured replies were negotiated: a READ is
// always answered with a single data chunk, so "don't fragment" is free.
func (e *export) txFlagsFor(structured bool) nbdproto.TxFlags {
	if structured {
		return e.flags | nbdproto.TxSendDF
	}
	return e.flags
}

func newExport(e Export) (*export, error) {
	if e.Device == nil {
		return nil, fmt.Errorf("%w: %q has no device", ErrInvalidExport, e.Name)
	}
	if len(e.Name) > nbdproto.MaxStringLen || strings.IndexByte(e.Name, 0) >= 0 {
		return nil, fmt.Errorf("%w: name %.64q is longer than %d bytes or contains NUL", ErrInvalidExport, e.Name, nbdproto.MaxStringLen)
	}
	if len(e.Description) > nbdproto.MaxStringLen || strings.IndexByte(e.Description, 0) >= 0 {
		return nil, fmt.Errorf("%w: %q: description is longer than %d bytes or contains NUL", ErrInvalidExport, e.Name, nbdproto.MaxStringLen)
	}
	info := e.Device.Info()
	bs := info.BlockSize
	if bits.OnesCount32(bs) != 1 || bs < bdev.SectorSize || bs > nbdproto.MaxMinBlockSize {
		return nil, fmt.Errorf("%w: %q: device block size %d is not a power of two between %d and %d",
			ErrInvalidExport, e.Name, bs, bdev.SectorSize, nbdproto.MaxMinBlockSize)
	}
	if info.NumBlocks == 0 {
		return nil, fmt.Errorf("%w: %q: device has no blocks", ErrInvalidExport, e.Name)
	}
	prefs := e.PreferredBlockSize
	if prefs == 0 {
		prefs = max(4096, bs)
	}
	if bits.OnesCount32(prefs) != 1 || prefs < bs || prefs > maxPayloadBytes {
		return nil, fmt.Errorf("%w: %q: preferred block size %d is not a power of two between %d and %d",
			ErrInvalidExport, e.Name, prefs, bs, maxPayloadBytes)
	}
	if info.ReadOnly {
		e.ReadOnly = true
	}
	flags := nbdproto.TxHasFlags | nbdproto.TxSendFlush
	if e.ReadOnly {
		flags |= nbdproto.TxReadOnly
	} else {
		flags |= nbdproto.TxSendFUA | nbdproto.TxSendWriteZeroes
		if info.Abilities.Discard {
			flags |= nbdproto.TxSendTrim
		}
	}
	if !e.NoMultiConn {
		flags |= nbdproto.TxCanMultiConn
	}
	return &export{
		Export:   e,
		size:     uint64(info.SizeBytes()),
		minBlock: bs,
		prefs:    prefs,
		flags:    flags,
		tryRead:  isTryReader(e.Device),
		tryWrite: isTryWriter(e.Device),
		conns:    make(map[*conn]struct{}),
	}, nil
}

// Server serves exports to NBD clients on any number of listeners. The zero
// value is not usable; call NewServer. All methods are safe for concurrent
// use.
//
// Each connection is served by a set of goroutines that take turns reading
// requests (at most 128 requests, and 64 MiB of payload, in flight): fast
// requests are executed by the goroutine that read them, slow ones in
// parallel; replies go out in completion order, several per write when they
// complete together (see conn.transmit). Every goroutine recovers panics,
// logs them and closes its connection.
//
// What all clients together can make the server hold is bounded by
// Options: connections (and file descriptors, see fdGuard), the time a
// negotiation or a WRITE's payload may take, and the payload bytes in
// flight (see budget). Payload buffers go back to a bounded pool, and their
// memory to the OS once the server is idle (see trimmer).
type Server struct {
	log    *slog.Logger
	opts   Options // immutable, defaults applied
	bufs   bufferPool
	budget *budget
	trim   trimmer
	fds    *fdGuard
	jobs   sync.Pool // *job
	// handedOff counts the requests handed off (see conn.transmit) on all
	// connections and not yet answered; the readers' polling reads it
	// (see rawSocket.yield).
	handedOff atomic.Int32

	refusals refusalLog

	// zeroes returns a shared, never written, zero buffer for WRITE_ZEROES on
	// devices whose Abilities lack WriteZeroes.
	zeroes func() []byte

	// replyTimeout bounds each reply write, so a client that stops reading
	// cannot hold a request (and RemoveExport, Shutdown) forever. Fixed at
	// NewServer; tests shorten it.
	replyTimeout time.Duration
	// inlinePeriod is the inline watchdog's period (see transmit); tests
	// lengthen it to show what does not depend on the watchdog.
	inlinePeriod time.Duration

	mu struct {
		sync.Mutex
		exports      map[string]*export
		listeners    map[*net.Listener]struct{}
		conns        map[*conn]struct{} // every open connection, from accept to close
		shuttingDown bool               // set once by Shutdown
	}
}

// NewServer returns a server with no exports, bounded by o (zero fields
// take their defaults). A nil log discards logging. It fails with
// ErrInvalidOptions if a field of o is out of range.
func NewServer(log *slog.Logger, o Options) (*Server, error) {
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		log:          log,
		opts:         o,
		budget:       newBudget(o.MaxInflightBytes),
		fds:          newFDGuard(),
		zeroes:       sync.OnceValue(func() []byte { return make([]byte, 1<<20) }),
		replyTimeout: 60 * time.Second,
		inlinePeriod: inlinePeriod,
	}
	s.trim = trimmer{bufs: &s.bufs, idle: func() bool { return s.budget.used.Load() == 0 }, free: debug.FreeOSMemory}
	s.jobs.New = func() any { return new(job) }
	s.mu.exports = make(map[string]*export)
	s.mu.listeners = make(map[*net.Listener]struct{})
	s.mu.conns = make(map[*conn]struct{})
	return s, nil
}

// BufferedBytes returns the payload bytes (WRITE payloads being received
// or written, READ data being read or sent) that requests hold now, of all
// connections together; at most Options.MaxInflightBytes.
func (s *Server) BufferedBytes() int64 { return s.budget.used.Load() }

// AddExport offers e to clients. It fails with ErrExportExists if the name
// is taken, ErrInvalidExport if e cannot be served, and ErrServerClosed
// after Shutdown.
func (s *Server) AddExport(e Export) error {
	ex, err := newExport(e)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mu.shuttingDown {
		return ErrServerClosed
	}
	if _, ok := s.mu.exports[e.Name]; ok {
		return fmt.Errorf("%w: %q", ErrExportExists, e.Name)
	}
	s.mu.exports[e.Name] = ex
	return nil
}

// RemoveExport withdraws an export: new clients can no longer open it, and
// each connected client is disconnected once the requests it already sent
// have been answered. It returns when all of them are gone. A client that
// stops reading replies is cut off after the reply timeout.
func (s *Server) RemoveExport(name string) error {
	s.mu.Lock()
	ex, ok := s.mu.exports[name]
	if !ok {
		s.mu.Unlock()
		return fmt.Errorf("%w: %q", ErrNoSuchExport, name)
	}
	delete(s.mu.exports, name)
	ex.removed = true
	conns := make([]*conn, 0, len(ex.conns))
	for c := range ex.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()

	for _, c := range conns {
		c.beginClose()
	}
	for _, c := range conns {
		<-c.done
	}
	return nil
}

// Exports returns the exports being served, sorted by name.
func (s *Server) Exports() []Export {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Export, 0, len(s.mu.exports))
	for _, ex := range s.mu.exports {
		out = append(out, ex.Export)
	}
	slices.SortFunc(out, func(a, b Export) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Serve accepts connections on l and serves each on its own goroutine. It
// may run on several listeners at once (TCP and Unix). It always closes l
// and returns a non-nil error: ErrServerClosed after Shutdown.
func (s *Server) Serve(l net.Listener) error {
	s.mu.Lock()
	if s.mu.shuttingDown {
		s.mu.Unlock()
		l.Close()
		return ErrServerClosed
	}
	s.mu.listeners[&l] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.mu.listeners, &l)
		s.mu.Unlock()
		l.Close()
	}()

	var backoff time.Duration
	for {
		nc, err := l.Accept()
		if err != nil {
			if s.shuttingDown() {
				return ErrServerClosed
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			// Out of file descriptors (another part of the process took
			// the reserve) and the like: wait and retry, as net/http does.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.log.Warn("nbd accept failed; retrying", "addr", l.Addr().String(), "err", err, "backoff", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		c, err := s.admit(nc)
		if errors.Is(err, ErrServerClosed) {
			nc.Close()
			continue // the next Accept fails
		}
		if err != nil {
			s.refuse(nc, err)
			continue
		}
		go c.serve()
	}
}

// Shutdown stops the server: it closes the listeners, lets every connection
// finish the requests it already sent (new requests are not read), closes
// the connections, and then flushes each exported device once. If ctx ends
// first, the remaining connections are closed at once and ctx's error is
// returned (joined with any flush error); the devices are still flushed.
func (s *Server) Shutdown(ctx context.Context) error {
	s.trim.stop()
	s.mu.Lock()
	s.mu.shuttingDown = true
	for l := range s.mu.listeners {
		(*l).Close()
	}
	conns := make([]*conn, 0, len(s.mu.conns))
	for c := range s.mu.conns {
		conns = append(conns, c)
	}
	exports := make([]*export, 0, len(s.mu.exports))
	for _, ex := range s.mu.exports {
		exports = append(exports, ex)
	}
	s.mu.Unlock()

	for _, c := range conns {
		c.beginClose()
	}
	var errs []error
wait:
	for _, c := range conns {
		select {
		case <-c.done:
		case <-ctx.Done():
			for _, c := range conns {
				c.nc.Close()
			}
			errs = append(errs, fmt.Errorf("nbd: shutdown: %w", ctx.Err()))
			break wait
		}
	}
	for _, ex := range exports {
		if err := ex.Device.Flush(); err != nil {
			errs = append(errs, fmt.Errorf("nbd: shutdown: flush export %q: %w", ex.Name, err))
		}
	}
	return errors.Join(errs...)
}

func (s *Server) shuttingDown() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mu.shuttingDown
}

// forget unregisters a closed connection from the server and its export.
func (s *Server) forget(c *conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.mu.conns, c)
	if c.ex != nil {
		delete(c.ex.conns, c)
	}
}

// lookup finds the export a client asks for by name (see Export.Name for
// the empty name), or nil.
func (s *Server) lookup(name string) *export {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ex, ok := s.mu.exports[name]; ok {
		return ex
	}
	if name == "" && len(s.mu.exports) == 1 {
		for _, ex := range s.mu.exports {
			return ex
		}
	}
	return nil
}

// attach makes c a connection of ex, so RemoveExport waits for it. It fails
// if ex was removed since lookup.
func (s *Server) attach(c *conn, ex *export) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ex.removed {
		return false
	}
	ex.conns[c] = struct{}{}
	c.ex = ex
	return true
}

// listExports returns the exports sorted by name, for NBD_OPT_LIST.
func (s *Server) listExports() []*export {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*export, 0, len(s.mu.exports))
	for _, ex := range s.mu.exports {
		out = append(out, ex)
	}
	slices.SortFunc(out, func(a, b *export) int { return strings.Compare(a.Name, b.Name) })
	return out
}

func isTryReader(d bdev.Device) bool {
	_, ok := d.(bdev.TryReader)
	return ok || bdev.IsImmediate(d)
}

func isTryWriter(d bdev.Device) bool {
	_, ok := d.(bdev.TryWriter)
	return ok || bdev.IsImmediate(d)
}
