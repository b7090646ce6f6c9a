package nbd

// Allow-lists. A TCP client whose address is in none of AllowList.Addrs,
// or a Unix socket client whose user and group are in neither
// AllowList.UIDs nor AllowList.GIDs, is closed at accept, before the
// greeting, and logged as a refused connection (rate-limited, see refuse).

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

var errNotAllowed = errors.New("client not in the allow-list")

// AllowList says which clients the server admits.
type AllowList struct {
	// Addrs, if not empty, lists the TCP clients admitted, by address
	// range (see ParseAllowList).
	Addrs []netip.Prefix
	// UIDs and GIDs, if either is not empty, admit only the Unix socket
	// clients whose process runs as one of these users or with one of
	// these (primary) groups, as SO_PEERCRED tells.
	UIDs, GIDs []uint32
}

// ParseAllowList parses addresses ("127.0.0.2", "::1") and CIDR ranges
// ("10.0.0.0/8"), each spec possibly a comma-separated list, into ranges
// for Options.Allow. An address is a range of one.
func ParseAllowList(specs []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, spec := range specs {
		for _, f := range strings.Split(spec, ",") {
			f = strings.TrimSpace(f)
			if f == "" {
				continue
			}
			if strings.Contains(f, "/") {
				p, err := netip.ParsePrefix(f)
				if err != nil {
					return nil, fmt.Errorf("%w: allow-list entry %q: %v", ErrInvalidOptions, f, err)
				}
				out = append(out, p.Masked())
				continue
			}
			a, err := netip.ParseAddr(f)
			if err != nil {
				return nil, fmt.Errorf("%w: allow-list entry %q is neither an address nor a CIDR range", ErrInvalidOptions, f)
			}
			a = a.Unmap()
			out = append(out, netip.PrefixFrom(a, a.BitLen()))
		}
	}
	return out, nil
}

// allowed says why nc is refused by the allow-lists, or nil.
func (s *Server) allowed(nc net.Conn) error {
	al := s.opts.Allow
	if al == nil {
		return nil
	}
	switch ra := nc.RemoteAddr().(type) {
	case *net.TCPAddr:
		if len(al.Addrs) == 0 {
			return nil
		}
		return allowAddr(al.Addrs, ra.AddrPort().Addr())
	case *net.UnixAddr:
		if len(al.UIDs) == 0 && len(al.GIDs) == 0 {
			return nil
		}
		cred, err := peerCred(nc)
		if err != nil {
			return fmt.Errorf("%w: SO_PEERCRED: %v", errNotAllowed, err)
		}
		if slices.Contains(al.UIDs, cred.Uid) || slices.Contains(al.GIDs, cred.Gid) {
			return nil
		}
		return fmt.Errorf("%w: uid %d gid %d (pid %d)", errNotAllowed, cred.Uid, cred.Gid, cred.Pid)
	}
	return nil
}

// allowAddr checks a client address against the allowed ranges.
func allowAddr(allow []netip.Prefix, a netip.Addr) error {
	a = a.Unmap()
	for _, p := range allow {
		if p.Contains(a) {
			return nil
		}
	}
	return fmt.Errorf("%w: %v", errNotAllowed, a)
}

// peerCred returns the credentials of the process at the other end of a
// Unix socket, as they were when it connected.
func peerCred(nc net.Conn) (*unix.Ucred, error) {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return nil, fmt.Errorf("%T has no file descriptor", nc)
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return nil, err
	}
	return cred, cerr
}
