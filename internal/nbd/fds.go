package nbd

import (
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"sync"
	"syscall"
	"time"
)

// File descriptors. Go raises the soft RLIMIT_NOFILE to (about) the hard
// limit when a program starts (package syscall), so the limit checked here
// is about the most the process can have. A connection is refused while the open descriptors,
// itself included, leave fewer than fdReserve below the limit: the
// JSON-RPC socket, device files and the runtime always find one.
const (
	fdReserve = 64
	// fdRecountEvery is how often open descriptors are counted while far
	// from the limit; in between they are estimated.
	fdRecountEvery = time.Second
	// fdRecountNear is how often they are counted at most while the
	// estimate is within twice the reserve of the limit.
	fdRecountNear = 10 * time.Millisecond
)

var errFDReserve = errors.New("file descriptors nearly exhausted")

// fdGuard decides whether the process can afford one more descriptor. It
// is safe for concurrent use.
//
// Counting reads /proc/self/fd, a cost that grows with the descriptors
// open, too much for every accept: between counts the guard estimates the
// last count plus the descriptors admitted since. Closes are not
// subtracted, so the estimate errs high.
type fdGuard struct {
	reserve int
	limit   func() (int, error) // the soft RLIMIT_NOFILE; tests substitute theirs
	count   func() (int, error) // open descriptors

	mu struct {
		sync.Mutex
		open     int       // at the last count
		at       time.Time // of the last count; zero before the first
		admitted int       // descriptors admitted since
	}
}

func newFDGuard() *fdGuard {
	return &fdGuard{reserve: fdReserve, limit: nofileLimit, count: openFDs}
}

// admit counts one more descriptor, already open, and returns nil if the
// reserve remains free with it; else an error wrapping errFDReserve with
// the numbers. When the limit or the count cannot be read it admits: the
// connection cap still holds.
func (g *fdGuard) admit(now time.Time) error {
	limit, err := g.limit()
	if err != nil {
		return nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	est := g.mu.open + g.mu.admitted
	age := now.Sub(g.mu.at)
	if g.mu.at.IsZero() || age >= fdRecountEvery || (est+2*g.reserve > limit && age >= fdRecountNear) {
		n, err := g.count()
		if err != nil {
			return nil
		}
		g.mu.open, g.mu.at, g.mu.admitted = n, now, 0
		est = n
	}
	if limit-est < g.reserve {
		return fmt.Errorf("%w: %d of %d open (RLIMIT_NOFILE), %d kept in reserve", errFDReserve, est, limit, g.reserve)
	}
	g.mu.admitted++
	return nil
}

// nofileLimit returns the soft RLIMIT_NOFILE.
func nofileLimit() (int, error) {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return 0, fmt.Errorf("getrlimit RLIMIT_NOFILE: %w", err)
	}
	return int(min(r.Cur, math.MaxInt32)), nil
}

// openFDs counts the process's open file descriptors in /proc/self/fd,
// less the one it opens to read it.
func openFDs() (int, error) {
	f, err := os.Open("/proc/self/fd")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	n := 0
	for {
		names, err := f.Readdirnames(1024)
		n += len(names)
		if err == io.EOF {
			return n - 1, nil
		}
		if err != nil {
			return 0, fmt.Errorf("read /proc/self/fd: %w", err)
		}
	}
}
