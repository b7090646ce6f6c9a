package nbd

// TLS (NBD_OPT_STARTTLS). A server in TLSOn or TLSRequire mode wraps each
// connection in an upgradableConn; on NBD_OPT_STARTTLS the handshake sends
// NBD_REP_ACK, runs the server side of the TLS handshake on the raw
// connection and switches the upgradableConn to it, so that everything read
// and written afterwards, by the handshake and by transmission, is
// encrypted. The rules of doc/proto.md ("TLS support") are in
// handshake.go's haggler.

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"blockcache/internal/pemfile"
)

// TLSMode says whether the server offers TLS and whether it insists on it.
type TLSMode int

// TLS modes, after doc/proto.md's NOTLS, SELECTIVETLS and FORCEDTLS.
const (
	// TLSOff refuses NBD_OPT_STARTTLS with NBD_REP_ERR_UNSUP.
	TLSOff TLSMode = iota
	// TLSOn lets each client choose: one that sends NBD_OPT_STARTTLS is
	// upgraded, one that does not is served in plain text.
	TLSOn
	// TLSRequire answers every option before NBD_OPT_STARTTLS, except
	// NBD_OPT_ABORT, with NBD_REP_ERR_TLS_REQD, and ends the session of a
	// client that sends NBD_OPT_EXPORT_NAME before it.
	TLSRequire
)

var tlsModeNames = [...]string{TLSOff: "off", TLSOn: "on", TLSRequire: "require"}

func (m TLSMode) String() string {
	if m < 0 || int(m) >= len(tlsModeNames) {
		return fmt.Sprintf("TLSMode(%d)", int(m))
	}
	return tlsModeNames[m]
}

// ParseTLSMode parses "off", "on" or "require".
func ParseTLSMode(s string) (TLSMode, error) {
	for m, name := range tlsModeNames {
		if s == name {
			return TLSMode(m), nil
		}
	}
	return TLSOff, fmt.Errorf("%w: TLS mode %q is not off, on or require", ErrInvalidOptions, s)
}

// The files of a TLS certificate directory, named as nbdkit's and qemu's
// (tls-creds-x509) are.
const (
	TLSCACertFile     = "ca-cert.pem"     // CA that signs client certificates
	TLSServerCertFile = "server-cert.pem" // the server's certificate (chain)
	TLSServerKeyFile  = "server-key.pem"  // its private key
	TLSCRLFile        = "ca-crl.pem"      // optional: client certificates the CA revoked
)

// LoadTLSConfig reads the server's credentials from dir (see TLSServerCertFile
// and the other names) and returns a configuration accepting TLS 1.2 and
// later. With verifyPeer, clients must present a certificate signed by
// the CA of TLSCACertFile, which must then exist, and not revoked by
// TLSCRLFile if that exists. Without it no client certificate is asked for.
func LoadTLSConfig(dir string, verifyPeer bool) (*tls.Config, error) {
	certPath, keyPath := filepath.Join(dir, TLSServerCertFile), filepath.Join(dir, TLSServerKeyFile)
	cert, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		return nil, fmt.Errorf("nbd tls: server certificate %s and key %s: %w", certPath, keyPath, err)
	}
	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.NoClientCert,
	}
	if !verifyPeer {
		return cfg, nil
	}
	caPath := filepath.Join(dir, TLSCACertFile)
	cas, err := readCerts(caPath)
	if err != nil {
		return nil, fmt.Errorf("nbd tls: CA certificate (needed to verify clients): %w", err)
	}
	pool := x509.NewCertPool()
	for _, ca := range cas {
		pool.AddCert(ca)
	}
	cfg.ClientAuth = tls.RequireAndVerifyClientCert
	cfg.ClientCAs = pool
	crlPath := filepath.Join(dir, TLSCRLFile)
	revoked, err := readCRL(crlPath, cas)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("nbd tls: %w", err)
	default:
		cfg.VerifyPeerCertificate = func(_ [][]byte, chains [][]*x509.Certificate) error {
			for _, chain := range chains {
				for _, c := range chain {
					if bytes.Equal(c.RawIssuer, c.RawSubject) {
						continue // a root: the CRL's serials are of what it issued
					}
					if revoked.has(c) {
						return fmt.Errorf("client certificate %q (serial %s) is revoked by %s", c.Subject, c.SerialNumber, crlPath)
					}
				}
			}
			return nil
		}
	}
	return cfg, nil
}

// readCerts parses every CERTIFICATE block of a PEM file.
func readCerts(path string) ([]*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return pemfile.Certificates(path, b)
}

// revocations are the serial numbers a CRL lists, by issuer.
type revocations map[string]map[string]bool // issuer DER subject -> serial (decimal) -> revoked

func (r revocations) has(c *x509.Certificate) bool {
	return r[string(c.RawIssuer)][c.SerialNumber.String()]
}

// readCRL parses the PEM CRLs at path, each of which must be signed by one
// of cas. A missing file is fs.ErrNotExist.
func readCRL(path string, cas []*x509.Certificate) (revocations, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	ders := pemfile.Blocks(b, "X509 CRL")
	if len(ders) == 0 {
		return nil, fmt.Errorf("CRL %s: no PEM X509 CRL block", path)
	}
	out := revocations{}
	for _, der := range ders {
		crl, err := x509.ParseRevocationList(der)
		if err != nil {
			return nil, fmt.Errorf("CRL %s: %w", path, err)
		}
		if !signedByOneOf(crl, cas) {
			return nil, fmt.Errorf("CRL %s: issued by %q, which is not signed by the CA of %s", path, crl.Issuer, TLSCACertFile)
		}
		m := out[string(crl.RawIssuer)]
		if m == nil {
			m = map[string]bool{}
			out[string(crl.RawIssuer)] = m
		}
		for _, e := range crl.RevokedCertificateEntries {
			m[e.SerialNumber.String()] = true
		}
	}
	return out, nil
}

func signedByOneOf(crl *x509.RevocationList, cas []*x509.Certificate) bool {
	for _, ca := range cas {
		if crl.CheckSignatureFrom(ca) == nil {
			return true
		}
	}
	return false
}

// upgradableConn is a connection whose transport is replaced, once, by TLS
// over it. Other goroutines may set its deadlines or close it at any time
// (beginClose, Shutdown); the switch is atomic, and since the TLS
// connection's deadlines act on the raw connection below, a deadline set
// just before the switch still applies after it.
//
// Close closes the raw connection at once, upgraded or not: tls.Conn.Close
// would first send a close-notify alert, waiting up to 5 s for room in the
// socket of a client that stopped reading, and the server closes
// connections one after the other. The alert is sent only to a client
// that asked to disconnect (see conn.closeNotify).
type upgradableConn struct {
	raw net.Conn
	tls atomic.Pointer[tlsSession] // nil until upgraded
}

// tlsSession is the TLS side of an upgraded connection.
type tlsSession struct {
	conn *tls.Conn
	// bw coalesces the replies of a batch into records of up to
	// tlsRecordBytes (see writeBuffers); used only by the connection's
	// writer, under its write lock.
	bw *bufio.Writer
}

// tlsRecordBytes is the most plaintext one TLS record carries.
const tlsRecordBytes = 16 << 10

// closeNotifyTimeout bounds the sending of a close-notify alert.
const closeNotifyTimeout = 250 * time.Millisecond

func (u *upgradableConn) cur() net.Conn {
	if s := u.tls.Load(); s != nil {
		return s.conn
	}
	return u.raw
}

func (u *upgradableConn) Read(p []byte) (int, error)         { return u.cur().Read(p) }
func (u *upgradableConn) Write(p []byte) (int, error)        { return u.cur().Write(p) }
func (u *upgradableConn) Close() error                       { return u.raw.Close() }
func (u *upgradableConn) LocalAddr() net.Addr                { return u.raw.LocalAddr() }
func (u *upgradableConn) RemoteAddr() net.Addr               { return u.raw.RemoteAddr() }
func (u *upgradableConn) SetDeadline(t time.Time) error      { return u.cur().SetDeadline(t) }
func (u *upgradableConn) SetReadDeadline(t time.Time) error  { return u.cur().SetReadDeadline(t) }
func (u *upgradableConn) SetWriteDeadline(t time.Time) error { return u.cur().SetWriteDeadline(t) }

// upgrade switches u to tc, a TLS connection over u.raw whose handshake
// is done.
func (u *upgradableConn) upgrade(tc *tls.Conn) {
	u.tls.Store(&tlsSession{conn: tc, bw: bufio.NewWriterSize(tc, tlsRecordBytes)})
}

// writeBuffers writes bufs, consuming them, in as few system calls as the
// transport allows. In plain text that is one writev on the raw socket:
// net.Buffers.WriteTo uses writev only on package net's own connections,
// which u is not. Over TLS, where every Write makes records of its own,
// the buffers are coalesced into records of up to tlsRecordBytes, instead
// of a record (and a system call) for each 16-byte reply header. Callers
// serialize writeBuffers and Write.
func (u *upgradableConn) writeBuffers(bufs *net.Buffers) error {
	s := u.tls.Load()
	if s == nil {
		_, err := bufs.WriteTo(u.raw)
		return err
	}
	for i, b := range *bufs {
		if _, err := s.bw.Write(b); err != nil {
			*bufs = (*bufs)[i:]
			return err
		}
	}
	*bufs = (*bufs)[len(*bufs):]
	return s.bw.Flush()
}

// closeNotify sends a TLS close-notify alert if the connection was
// upgraded, giving up after timeout by closing the raw connection: the
// client may have stopped reading. It is called with no write in flight.
func (u *upgradableConn) closeNotify(timeout time.Duration) {
	s := u.tls.Load()
	if s == nil {
		return
	}
	t := time.AfterFunc(timeout, func() { u.raw.Close() })
	s.conn.CloseWrite()
	t.Stop()
}

// closeNotify ends the TLS session, if any, of a client that disconnected
// with NBD_CMD_DISC with a close-notify alert, as TLS asks, before the
// connection is closed. No other end of a session sends one (see
// upgradableConn).
func (c *conn) closeNotify() {
	if u, ok := c.nc.(*upgradableConn); ok {
		u.closeNotify(closeNotifyTimeout)
	}
}

// tlsUpgrader is the optional ability of a catalog whose connection can be
// upgraded to TLS; a catalog without it is served as TLSOff.
type tlsUpgrader interface {
	tlsMode() TLSMode
	// startTLS runs the server side of the TLS handshake; on success
	// everything read and written afterwards goes through TLS.
	startTLS() error
}

func (k connCatalog) tlsMode() TLSMode { return k.c.srv.opts.TLS }

func (k connCatalog) startTLS() error {
	u, ok := k.c.nc.(*upgradableConn)
	if !ok {
		return errors.New("connection cannot be upgraded") // TLSOff: never offered
	}
	tc := tls.Server(u.raw, k.c.srv.opts.TLSConfig)
	if err := tc.Handshake(); err != nil {
		return err
	}
	u.upgrade(tc)
	st := tc.ConnectionState()
	attrs := []any{"remote", k.c.remote, "version", tls.VersionName(st.Version), "cipher", tls.CipherSuiteName(st.CipherSuite)}
	if len(st.PeerCertificates) > 0 {
		attrs = append(attrs, "client", st.PeerCertificates[0].Subject.String())
	}
	k.c.srv.log.Info("nbd tls established", attrs...)
	return nil
}
