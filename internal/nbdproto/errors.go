package nbdproto

import "errors"

// ErrBadMagic means a header does not start with its magic number: the
// stream is out of sync, or the peer does not speak NBD. The error
// returned names the magic found.
var ErrBadMagic = errors.New("bad NBD magic")
