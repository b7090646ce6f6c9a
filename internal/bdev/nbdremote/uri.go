package nbdremote

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
)

// DefaultPort is NBD's IANA port, used when an nbd:// URI names none.
const DefaultPort = 10809

// URI is where an export lives: a parsed NBD URI in one of libnbd's forms,
//
//	nbd://host[:port]/export          TCP, port 10809 unless given
//	nbd+unix:///export?socket=PATH    Unix domain socket
//
// The export name is the URI's path without its first "/", percent-decoded
// ("nbd://h/" is the default export "", "nbd://h//x" is "/x").
type URI struct {
	Network string // "tcp" or "unix"
	Address string // host:port, or the socket path
	Export  string
}

// ParseURI parses s. It fails with an error wrapping ErrBadURI that says
// which part is wrong, or ErrTLSNotSupported for nbds:// and nbds+unix://.
func ParseURI(s string) (URI, error) {
	bad := func(format string, args ...any) (URI, error) {
		return URI{}, fmt.Errorf("NBD URI %q: %s: %w", s, fmt.Sprintf(format, args...), ErrBadURI)
	}
	if s == "" {
		return bad("empty")
	}
	u, err := url.Parse(s)
	if err != nil {
		return bad("%v", unwrapURLError(err))
	}
	switch u.Scheme {
	case "nbd", "nbd+unix":
	case "nbds", "nbds+unix":
		return URI{}, fmt.Errorf("NBD URI %q: %w", s, ErrTLSNotSupported)
	case "":
		return bad("no scheme: want nbd://host[:port]/export or nbd+unix:///export?socket=PATH")
	default:
		return bad("scheme %q: want nbd or nbd+unix", u.Scheme)
	}
	if u.Opaque != "" {
		return bad("want %s:// followed by an authority", u.Scheme)
	}
	if u.User != nil {
		return bad("user information is only used with TLS, which is not supported yet")
	}
	if u.Fragment != "" || strings.Contains(s, "#") {
		return bad("fragments are not allowed")
	}
	export := ""
	if u.Path != "" {
		if u.Path[0] != '/' {
			return bad("path %q must start with /", u.Path)
		}
		export = u.Path[1:]
	}
	if len(export) > 4096 {
		return bad("export name of %d bytes is longer than NBD's 4096", len(export))
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return bad("query: %v", err)
	}
	if u.Scheme == "nbd+unix" {
		if u.Host != "" {
			return bad("nbd+unix takes no host (%q): use nbd+unix:///export?socket=PATH", u.Host)
		}
		socks := q["socket"]
		delete(q, "socket")
		if err := noMoreQuery(q); err != "" {
			return bad("%s", err)
		}
		if len(socks) != 1 || socks[0] == "" {
			return bad("nbd+unix needs exactly one non-empty socket=PATH query")
		}
		return URI{Network: "unix", Address: socks[0], Export: export}, nil
	}
	if err := noMoreQuery(q); err != "" {
		return bad("%s", err)
	}
	host := u.Hostname()
	if host == "" {
		return bad("no host: want nbd://host[:port]/export")
	}
	port := DefaultPort
	if p := u.Port(); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			return bad("port %q: want 1..65535", p)
		}
		port = n
	} else if strings.HasSuffix(u.Host, ":") {
		return bad("empty port")
	}
	return URI{Network: "tcp", Address: net.JoinHostPort(host, strconv.Itoa(port)), Export: export}, nil
}

func noMoreQuery(q url.Values) string {
	for k := range q {
		return fmt.Sprintf("query parameter %q is not supported", k)
	}
	return ""
}

func unwrapURLError(err error) error {
	if ue, ok := err.(*url.Error); ok {
		return ue.Err
	}
	return err
}

// String returns the URI in canonical form.
func (u URI) String() string {
	path := (&url.URL{Path: "/" + u.Export}).EscapedPath()
	if u.Network == "unix" {
		return "nbd+unix://" + path + "?socket=" + url.QueryEscape(u.Address)
	}
	return "nbd://" + u.Address + path
}
