package main

import (
	"fmt"
	"io/fs"
	"strconv"

	"github.com/spf13/pflag"

	"blockcache/internal/daemon"
	"blockcache/internal/nbd"
)

// securityFlags are serve's flags for who may connect: TLS, allow-lists
// and socket modes (docs/security.md).
type securityFlags struct {
	tls, tlsDir, tlsPSK string
	tlsVerifyPeer       bool
	allow               []string
	allowUIDs           []uint
	allowGIDs           []uint
	nbdSocketMode       string
	rpcGroup            string
}

func addSecurityFlags(f *pflag.FlagSet) *securityFlags {
	s := &securityFlags{}
	f.StringVar(&s.tls, "tls", "off", "NBD TLS: off, on (clients choose) or require (every client must send NBD_OPT_STARTTLS first)")
	f.StringVar(&s.tlsDir, "tls-certificates", "", "directory of ca-cert.pem, server-cert.pem, server-key.pem and optionally ca-crl.pem (nbdkit's and qemu's layout); needed with --tls=on|require")
	f.BoolVar(&s.tlsVerifyPeer, "tls-verify-peer", false, "require NBD clients to present a certificate signed by ca-cert.pem (and not revoked by ca-crl.pem)")
	f.StringVar(&s.tlsPSK, "tls-psk", "", "not supported: Go's crypto/tls has no pre-shared-key cipher suites; use --tls-certificates")
	f.StringSliceVar(&s.allow, "nbd-allow", nil, "admit only NBD TCP clients from these addresses or CIDR ranges (repeatable or comma-separated); others are closed before the handshake")
	f.UintSliceVar(&s.allowUIDs, "nbd-allow-uid", nil, "admit only NBD Unix socket clients running as these uids (or --nbd-allow-gid), checked with SO_PEERCRED")
	f.UintSliceVar(&s.allowGIDs, "nbd-allow-gid", nil, "admit only NBD Unix socket clients whose primary group is one of these gids (or --nbd-allow-uid)")
	f.StringVar(&s.nbdSocketMode, "nbd-socket-mode", fmt.Sprintf("%04o", daemon.DefaultNBDSocketMode), "mode of the NBD Unix socket (octal); whoever can connect can read and write every export")
	f.StringVar(&s.rpcGroup, "rpc-group", "", "give the RPC socket to this group with mode 0660 (default: 0600, its owner only); members can do anything root can through the daemon")
	return s
}

// apply checks the flags and sets them in cfg, naming the flag at fault.
func (s *securityFlags) apply(cfg *daemon.Config) error {
	if s.tlsPSK != "" {
		return fmt.Errorf("--tls-psk: not supported: Go's crypto/tls has no pre-shared-key (PSK) cipher suites; use --tls-certificates DIR with X.509 certificates")
	}
	mode, err := nbd.ParseTLSMode(s.tls)
	if err != nil {
		return fmt.Errorf("--tls %q: want off, on or require", s.tls)
	}
	cfg.NBD.TLS = mode
	switch {
	case mode == nbd.TLSOff && (s.tlsDir != "" || s.tlsVerifyPeer):
		return fmt.Errorf("--tls-certificates and --tls-verify-peer need --tls=on or --tls=require")
	case mode != nbd.TLSOff && s.tlsDir == "":
		return fmt.Errorf("--tls=%s needs --tls-certificates DIR", mode)
	case mode != nbd.TLSOff:
		if cfg.NBD.TLSConfig, err = nbd.LoadTLSConfig(s.tlsDir, s.tlsVerifyPeer); err != nil {
			return fmt.Errorf("--tls-certificates %s: %w", s.tlsDir, err)
		}
	}
	if len(s.allow) > 0 || len(s.allowUIDs) > 0 || len(s.allowGIDs) > 0 {
		al := &nbd.AllowList{}
		if al.Addrs, err = nbd.ParseAllowList(s.allow); err != nil {
			return fmt.Errorf("--nbd-allow: %w", err)
		}
		if len(s.allow) > 0 && len(al.Addrs) == 0 {
			return fmt.Errorf("--nbd-allow: no address given")
		}
		for _, u := range s.allowUIDs {
			al.UIDs = append(al.UIDs, uint32(u))
		}
		for _, g := range s.allowGIDs {
			al.GIDs = append(al.GIDs, uint32(g))
		}
		cfg.NBD.Allow = al
	}
	m, err := strconv.ParseUint(s.nbdSocketMode, 8, 32)
	if err != nil || m == 0 || m&^0o777 != 0 {
		return fmt.Errorf("--nbd-socket-mode %q: want an octal mode from 0001 to 0777, e.g. 0660", s.nbdSocketMode)
	}
	cfg.NBDSocketMode = fs.FileMode(m)
	cfg.RPCGroup = s.rpcGroup
	return nil
}
