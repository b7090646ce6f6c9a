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
//	nbds://host[:port]/export         TCP with TLS required
//	nbds+unix:///export?socket=PATH   Unix domain socket with TLS required
//
// The export name is the URI's path without its first "/", percent-decoded
// ("nbd://h/" is the default export "", "nbd://h//x" is "/x"). The TLS
// forms take libnbd's tls-certificates, tls-verify-peer and tls-hostname
// query parameters (TLSParams).
type URI struct {
	Network string // "tcp" or "unix"
	Address string // host:port, or the socket path
	Export  string
	TLS     TLSParams
}

// TLSParams are the TLS settings of an nbds:// or nbds+unix:// URI. The
// zero value is plain text.
type TLSParams struct {
	// Enabled is set by the nbds schemes: the connection uses TLS or
	// fails, never falling back to plain text.
	Enabled bool
	// Certificates is the tls-certificates directory (ca-cert.pem, and
	// client-cert.pem with client-key.pem); "" searches libnbd's default
	// directories (DefaultTLSDirs).
	Certificates string
	// Hostname is tls-hostname, the name the server's certificate must
	// carry; "" is the URI's host, or for a Unix socket no name check.
	Hostname string
	// NoVerifyPeer is tls-verify-peer=false: the server's certificate is
	// not checked at all.
	NoVerifyPeer bool
}

// ParseURI parses s. It fails with an error wrapping ErrBadURI that says
// which part is wrong, or ErrTLSNotSupported for the TLS features this
// client lacks (pre-shared keys).
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
	var tp TLSParams
	switch u.Scheme {
	case "nbd", "nbd+unix":
	case "nbds", "nbds+unix":
		tp.Enabled = true
	case "":
		return bad("no scheme: want nbd://host[:port]/export or nbd+unix:///export?socket=PATH")
	default:
		return bad("scheme %q: want nbd, nbd+unix, nbds or nbds+unix", u.Scheme)
	}
	unix := strings.HasSuffix(u.Scheme, "+unix")
	if u.Opaque != "" {
		return bad("want %s:// followed by an authority", u.Scheme)
	}
	if u.User != nil {
		if tp.Enabled {
			return URI{}, fmt.Errorf("NBD URI %q: a user name is the TLS pre-shared-key identity: %w", s, ErrTLSNotSupported)
		}
		return bad("user information is only used with TLS")
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
	if msg, err := tp.parseQuery(q); msg != "" {
		return bad("%s", msg)
	} else if err != nil {
		return URI{}, fmt.Errorf("NBD URI %q: %w", s, err)
	}
	if unix {
		if u.Host != "" {
			return bad("%s takes no host (%q): use %s:///export?socket=PATH", u.Scheme, u.Host, u.Scheme)
		}
		socks := q["socket"]
		delete(q, "socket")
		if err := noMoreQuery(q); err != "" {
			return bad("%s", err)
		}
		if len(socks) != 1 || socks[0] == "" {
			return bad("%s needs exactly one non-empty socket=PATH query", u.Scheme)
		}
		return URI{Network: "unix", Address: socks[0], Export: export, TLS: tp}, nil
	}
	if err := noMoreQuery(q); err != "" {
		return bad("%s", err)
	}
	if strings.Count(u.Host, ":") > 1 && !strings.HasPrefix(u.Host, "[") {
		return bad("host %q: an IPv6 address goes in brackets, as [::1]:10809", u.Host)
	}
	host := u.Hostname()
	if host == "" {
		return bad("no host: want %s://host[:port]/export", u.Scheme)
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
	return URI{Network: "tcp", Address: net.JoinHostPort(host, strconv.Itoa(port)), Export: export, TLS: tp}, nil
}

// parseQuery takes the tls-* parameters out of q into p. It returns a
// message for a malformed URI, or an error for a feature not supported.
func (p *TLSParams) parseQuery(q url.Values) (string, error) {
	one := func(key string) (string, bool, string) {
		vs, ok := q[key]
		if !ok {
			return "", false, ""
		}
		delete(q, key)
		if !p.Enabled {
			return "", true, fmt.Sprintf("%s is only used with TLS: use nbds:// or nbds+unix://", key)
		}
		if len(vs) != 1 || vs[0] == "" {
			return "", true, fmt.Sprintf("want exactly one non-empty %s=", key)
		}
		return vs[0], true, ""
	}
	if _, ok := q["tls-psk-file"]; ok {
		delete(q, "tls-psk-file")
		if p.Enabled {
			return "", fmt.Errorf("tls-psk-file: pre-shared keys: %w", ErrTLSNotSupported)
		}
		return "tls-psk-file is only used with TLS: use nbds:// or nbds+unix://", nil
	}
	v, _, msg := one("tls-certificates")
	if msg != "" {
		return msg, nil
	}
	p.Certificates = v
	v, _, msg = one("tls-hostname")
	if msg != "" {
		return msg, nil
	}
	p.Hostname = v
	v, ok, msg := one("tls-verify-peer")
	if msg != "" {
		return msg, nil
	}
	if ok {
		verify, err := parseBool(v)
		if err != nil {
			return fmt.Sprintf("tls-verify-peer=%q: want true or false", v), nil
		}
		p.NoVerifyPeer = !verify
	}
	return "", nil
}

// parseBool reads a boolean as libnbd's URI parameters spell them.
func parseBool(s string) (bool, error) {
	switch strings.ToLower(s) {
	case "1", "true", "yes", "on":
		return true, nil
	case "0", "false", "no", "off":
		return false, nil
	}
	return false, strconv.ErrSyntax
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

// String returns the URI in canonical form, with every parameter it was
// given: parsing it gives u back.
func (u URI) String() string {
	path := (&url.URL{Path: "/" + u.Export}).EscapedPath()
	var q []string
	if u.Network == "unix" {
		q = append(q, "socket="+queryValue(u.Address))
	}
	if t := u.TLS; t.Enabled {
		if t.Certificates != "" {
			q = append(q, "tls-certificates="+queryValue(t.Certificates))
		}
		if t.Hostname != "" {
			q = append(q, "tls-hostname="+queryValue(t.Hostname))
		}
		if t.NoVerifyPeer {
			q = append(q, "tls-verify-peer=false")
		}
	}
	query := ""
	if len(q) > 0 {
		query = "?" + strings.Join(q, "&")
	}
	scheme := "nbd"
	if u.TLS.Enabled {
		scheme = "nbds"
	}
	if u.Network == "unix" {
		return scheme + "+unix://" + path + query
	}
	return scheme + "://" + u.Address + path + query
}

// queryValue escapes a query value, keeping the slashes of paths, which
// RFC 3986 allows in a query, readable.
func queryValue(s string) string {
	return strings.ReplaceAll(url.QueryEscape(s), "%2F", "/")
}
