package nbdclient

import (
	"bufio"
	"crypto/tls"
	"fmt"
)

// RepErrTLSReqd is the reply of a server that wants NBD_OPT_STARTTLS first.
const RepErrTLSReqd uint32 = RepFlagError | 5

// StartTLS sends NBD_OPT_STARTTLS and, once the server acknowledged it,
// runs the client side of the TLS handshake with cfg: everything after
// goes through TLS, and structured replies must be negotiated again. A
// refusal is an *OptError.
func (n *Negotiator) StartTLS(cfg *tls.Config) error {
	if _, err := n.Option(OptStartTLS, nil); err != nil {
		return err
	}
	if n.br.Buffered() > 0 {
		return fmt.Errorf("nbd: %d plain-text bytes after the STARTTLS reply", n.br.Buffered())
	}
	tc := tls.Client(n.nc, cfg)
	if err := tc.Handshake(); err != nil {
		return fmt.Errorf("nbd: TLS handshake: %w", err)
	}
	n.nc, n.br, n.structured = tc, bufio.NewReader(tc), false
	return nil
}
