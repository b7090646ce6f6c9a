// Package sysmem tells how much more memory the process can get before the
// kernel refuses it or kills the process: the lower of MemAvailable in
// /proc/meminfo and, for each memory cgroup from the process's own up to
// the hierarchy's root, its limit less its usage (plus the inactive file
// cache it would reclaim first). Creators of memory-backed objects ask it
// before allocating, so that a request too large fails with a message
// instead of "runtime: out of memory".
package sysmem

import (
	"errors"
	"io/fs"
	"path/filepath"
)

// Probe reads the memory figures from the files under Root. The zero value
// reads the real /proc and /sys.
type Probe struct {
	// Root is prepended to every path read (/proc/meminfo,
	// /proc/self/cgroup, /proc/self/mountinfo and the cgroup files the
	// last two lead to); "" means "/". Tests point it at a fake tree.
	Root string
}

// Available is how much memory the process can still get, and what limits
// it.
type Available struct {
	Bytes int64
	// Source names the limit, e.g. "MemAvailable in /proc/meminfo" or
	// "memory.max of cgroup /sys/fs/cgroup/app".
	Source string
}

// Available returns the memory the process can still get. It fails only if
// not even /proc/meminfo can be read; cgroup files that are missing or
// unreadable are skipped, since the kernel then enforces no such limit that
// the process could see.
func (p Probe) Available() (Available, error) {
	avail, err := p.memAvailable()
	if err != nil {
		return Available{}, err
	}
	for _, l := range p.cgroupLimits() {
		if l.Bytes < avail.Bytes {
			avail = l
		}
	}
	return avail, nil
}

// Check returns nil if need bytes fit in what Available reports, and a
// *ShortError otherwise. If the figures cannot be read it returns nil: an
// unknown limit is not a reason to refuse.
func (p Probe) Check(need int64) error {
	avail, err := p.Available()
	if err != nil {
		return nil
	}
	if need > avail.Bytes {
		return &ShortError{Need: need, Available: avail}
	}
	return nil
}

// path returns the real path of an absolute path under Root.
func (p Probe) path(abs string) string {
	if p.Root == "" {
		return abs
	}
	return filepath.Join(p.Root, abs)
}

// isNotExist reports a missing file, the usual absence of a cgroup file.
func isNotExist(err error) bool { return errors.Is(err, fs.ErrNotExist) }
