package nbdremote

// TLS (nbds:// and nbds+unix://). After the greeting the client sends
// NBD_OPT_STARTTLS before any other option; on NBD_REP_ACK it runs the
// client side of a TLS handshake on the raw connection, and the rest of
// the negotiation and all of transmission go through TLS. A refusal fails
// the connection: an nbds URI never falls back to plain text. Every
// connection, first or reconnect, does this anew and reads the
// certificate directory again, so renewed certificates are picked up.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"

	"blockcache/internal/nbdproto"
	"blockcache/internal/pemfile"
)

// The files of a client certificate directory, as libnbd, qemu
// (tls-creds-x509 endpoint=client) and nbdkit's clients name them.
const (
	TLSCACertFile     = "ca-cert.pem"     // CA(s) the server's certificate must chain to
	TLSClientCertFile = "client-cert.pem" // optional: the client's certificate (chain)
	TLSClientKeyFile  = "client-key.pem"  // its private key, with TLSClientCertFile
	TLSCRLFile        = "ca-crl.pem"      // optional: certificates the CA revoked
)

// DefaultTLSDirs returns libnbd's default certificate directories, searched
// in order when a URI has no tls-certificates: /etc/pki/libnbd for root,
// else $HOME/.pki/libnbd and $HOME/.config/pki/libnbd. When none exists
// the system's trusted CAs verify the server.
func DefaultTLSDirs(euid int, home string) []string {
	if euid == 0 {
		return []string{"/etc/pki/libnbd"}
	}
	if home == "" {
		return nil
	}
	return []string{filepath.Join(home, ".pki", "libnbd"), filepath.Join(home, ".config", "pki", "libnbd")}
}

// certificateDir is p's directory, or the first of the default ones that
// exists, or "" for none.
func (p TLSParams) certificateDir() string {
	if p.Certificates != "" {
		return p.Certificates
	}
	home, _ := os.UserHomeDir()
	for _, dir := range DefaultTLSDirs(os.Geteuid(), home) {
		if st, err := os.Stat(dir); err == nil && st.IsDir() {
			return dir
		}
	}
	return ""
}

// clientTLSConfig builds the TLS configuration for u: TLS 1.2 or later,
// the CAs of the certificate directory (or the system's), the CRL of the
// directory if it has one, the client certificate if it has one, and the
// name the server's certificate must carry (tls-hostname, else the URI's
// host; a Unix socket without tls-hostname has its certificate checked
// against the CAs only).
func clientTLSConfig(u URI) (*tls.Config, error) {
	p := u.TLS
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	dir := p.certificateDir()
	var roots *x509.CertPool // nil: the system's
	var crl *crlCheck        // nil: no CRL
	if dir != "" {
		if err := addClientCert(cfg, dir); err != nil {
			return nil, err
		}
		if !p.NoVerifyPeer {
			caPath := filepath.Join(dir, TLSCACertFile)
			cas, err := readCAs(caPath)
			if err != nil {
				return nil, err
			}
			roots = x509.NewCertPool()
			for _, c := range cas {
				roots.AddCert(c)
			}
			if crl, err = readCRL(filepath.Join(dir, TLSCRLFile), cas, caPath); err != nil {
				return nil, err
			}
		}
	}
	cfg.RootCAs = roots
	name := p.Hostname
	if name == "" && u.Network == "tcp" {
		host, _, err := net.SplitHostPort(u.Address)
		if err != nil {
			return nil, fmt.Errorf("address %q: %w", u.Address, ErrBadURI)
		}
		name = host
	}
	switch {
	case p.NoVerifyPeer:
		cfg.InsecureSkipVerify = true
	case name != "":
		cfg.ServerName = name
		if crl != nil {
			cfg.VerifyConnection = func(cs tls.ConnectionState) error {
				return crl.check(cs.VerifiedChains)
			}
		}
	default:
		// crypto/tls checks a name or nothing: check the chain here.
		cfg.InsecureSkipVerify = true
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			chains, err := verifyChain(cs.PeerCertificates, roots)
			if err != nil || crl == nil {
				return err
			}
			return crl.check(chains)
		}
	}
	return cfg, nil
}

// verifyChain checks that certs[0] is a server certificate issued, through
// certs[1:], by one of roots (nil: the system's), whatever names it
// carries, and returns the chains that verify it.
func verifyChain(certs []*x509.Certificate, roots *x509.CertPool) ([][]*x509.Certificate, error) {
	if len(certs) == 0 {
		return nil, errors.New("the server sent no certificate")
	}
	opts := x509.VerifyOptions{Roots: roots, Intermediates: x509.NewCertPool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	for _, c := range certs[1:] {
		opts.Intermediates.AddCert(c)
	}
	return certs[0].Verify(opts)
}

// addClientCert loads client-cert.pem and client-key.pem from dir if they
// exist; one without the other is an error.
func addClientCert(cfg *tls.Config, dir string) error {
	certPath, keyPath := filepath.Join(dir, TLSClientCertFile), filepath.Join(dir, TLSClientKeyFile)
	_, certErr := os.Stat(certPath)
	_, keyErr := os.Stat(keyPath)
	switch {
	case errors.Is(certErr, fs.ErrNotExist) && errors.Is(keyErr, fs.ErrNotExist):
		return nil
	case errors.Is(keyErr, fs.ErrNotExist):
		return fmt.Errorf("%s without %s: %w", certPath, TLSClientKeyFile, ErrTLSCredentials)
	case errors.Is(certErr, fs.ErrNotExist):
		return fmt.Errorf("%s without %s: %w", keyPath, TLSClientCertFile, ErrTLSCredentials)
	}
	cert, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		return fmt.Errorf("client certificate %s and key %s: %v: %w", certPath, keyPath, err, ErrTLSCredentials)
	}
	cfg.Certificates = []tls.Certificate{cert}
	return nil
}

// readCAs reads every CERTIFICATE block of the PEM file at path.
func readCAs(path string) ([]*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("CA certificate (needed to verify the server; tls-verify-peer=false skips it): %v: %w", err, ErrTLSCredentials)
	}
	certs, err := pemfile.Certificates(path, b)
	if err != nil {
		return nil, fmt.Errorf("%v: %w", err, ErrTLSCredentials)
	}
	return certs, nil
}

// startTLS asks for TLS with NBD_OPT_STARTTLS, right after the greeting.
// Any answer but NBD_REP_ACK fails: ErrTLSRefused for an error reply.
func startTLS(r io.Reader, w io.Writer) error {
	if err := sendOption(w, nbdproto.OptStartTLS, nil); err != nil {
		return err
	}
	typ, data, err := readOptionReply(r, nbdproto.OptStartTLS)
	if err != nil {
		return err
	}
	switch {
	case typ == nbdproto.RepAck:
		if len(data) != 0 {
			return fmt.Errorf("NBD_REP_ACK to NBD_OPT_STARTTLS with %d bytes of data: %w", len(data), ErrProtocol)
		}
		return nil
	case typ&nbdproto.RepFlagError != 0:
		msg := ""
		if len(data) > 0 {
			msg = fmt.Sprintf(" (%q)", sanitize(data))
		}
		return fmt.Errorf("the server refused NBD_OPT_STARTTLS with %v%s: %w", typ, msg, ErrTLSRefused)
	}
	return fmt.Errorf("reply %v to NBD_OPT_STARTTLS: %w", typ, ErrProtocol)
}

// upgrade runs the client side of the TLS handshake on nc, after the
// server acknowledged NBD_OPT_STARTTLS, bounded by ctx and nc's deadline.
func upgrade(ctx context.Context, nc net.Conn, cfg *tls.Config) (net.Conn, error) {
	tc := tls.Client(nc, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		var rh tls.RecordHeaderError
		switch {
		case isTimeout(err):
			return nil, fmt.Errorf("TLS handshake: %v: %w", err, ErrTimeout)
		case errors.As(err, &rh):
			return nil, fmt.Errorf("TLS handshake: the server sent something else than TLS: %v: %w", err, ErrProtocol)
		}
		return nil, fmt.Errorf("%v: %w", err, ErrTLSHandshake)
	}
	return &tlsConn{Conn: tc, raw: nc}, nil
}

// tlsConn is a TLS connection whose Close closes the socket at once. The
// client ends a session with NBD_CMD_DISC; crypto/tls's Close would also
// send close_notify, which can block for seconds on a server that stopped
// reading, and connections are closed while the device's lock is held.
type tlsConn struct {
	*tls.Conn
	raw net.Conn
}

func (c *tlsConn) Close() error { return c.raw.Close() }

// afterHandshake classifies an error of the negotiation over TLS, of
// which read bytes were received. Under TLS 1.3 the server checks the
// client's certificate after the client's side of the handshake is done,
// so a rejection arrives on the first read: as an alert (crypto/tls), or
// as the connection closed or reset without a byte (GnuTLS). Both are
// TLS failures.
func afterHandshake(err error, read int64) error {
	var oe *net.OpError
	switch {
	case errors.As(err, &oe) && oe.Op == "remote error":
		return fmt.Errorf("%v: %w", err, ErrTLSHandshake)
	case read == 0 && !isTimeout(err):
		return fmt.Errorf("the server ended the session right after the TLS handshake, before any reply (did it reject the client certificate?): %v: %w", err, ErrTLSHandshake)
	}
	return err
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
