package nbdremote

import (
	"fmt"
	"time"

	"blockcache/internal/poller"
)

// Options configure a Device. The reconnect knobs are those of SPDK's
// bdev_nvme_attach_controller, with the same rules between them (Validate),
// but blockcache's defaults (DefaultOptions): a cache in front of a network
// volume rides out blips instead of dropping its core on the first one.
type Options struct {
	// Connections is how many connections to open when the server
	// advertises multi-conn; 1 otherwise.
	Connections int
	// ReconnectDelay is the wait between reconnect attempts; zero only
	// when CtrlrLossTimeout is zero.
	ReconnectDelay time.Duration
	// CtrlrLossTimeout is how long after a lost connection the device
	// gives up and removes itself; negative retries forever, zero gives
	// up at the first loss.
	CtrlrLossTimeout time.Duration
	// FastIOFailTimeout is how long requests wait for a lost connection
	// to come back before failing with EIO; zero waits until the device
	// gives up.
	FastIOFailTimeout time.Duration
	// IOTimeout bounds one request on a live connection and the
	// handshake; a request past it drops the connection, which is then
	// handled as lost. Zero means no bound.
	IOTimeout time.Duration
	// QueueDepth is how many requests may be outstanding at once; more
	// wait for a slot.
	QueueDepth int
	// OnLost, if set, is called once, on a goroutine of its own, when
	// CtrlrLossTimeout ran out: the owner should unregister and close the
	// device.
	OnLost func()
	// OnEvent, if set, is told of connection changes (lost, reconnected,
	// gave up) as a short message; it must not block.
	OnEvent func(msg string, err error)
	// Pollers, if not nil, gets a check per connection while it is open:
	// a look at its socket for a reply the reader has not taken yet, so
	// that a goroutine busy on the one scheduler slot (the NBD server's
	// reader) lets the reader run as soon as a reply arrives (package
	// poller).
	Pollers *poller.Set
}

// Defaults: reconnect every second, fail IO after 30 s, keep trying forever.
const (
	DefaultReconnectDelay    = time.Second
	DefaultFastIOFailTimeout = 30 * time.Second
	DefaultCtrlrLossTimeout  = -1 * time.Second
	DefaultIOTimeout         = 30 * time.Second
	DefaultQueueDepth        = 128
	maxConnections           = 16
	maxQueueDepth            = 4096
)

// DefaultOptions returns the defaults.
func DefaultOptions() Options {
	return Options{
		Connections:       1,
		ReconnectDelay:    DefaultReconnectDelay,
		CtrlrLossTimeout:  DefaultCtrlrLossTimeout,
		FastIOFailTimeout: DefaultFastIOFailTimeout,
		IOTimeout:         DefaultIOTimeout,
		QueueDepth:        DefaultQueueDepth,
	}
}

// Validate checks o with SPDK's rules between the reconnect knobs
// (bdev_nvme's io error resiliency parameters):
//
//   - ctrlr_loss_timeout is -1 (forever), 0 or positive;
//   - if it is not 0, reconnect_delay is not 0, and fast_io_fail_timeout,
//     when not 0, is at least reconnect_delay;
//   - if it is positive, reconnect_delay and fast_io_fail_timeout are at
//     most ctrlr_loss_timeout;
//   - if it is 0, reconnect_delay and fast_io_fail_timeout are 0.
//
// It returns an error wrapping ErrInvalidOptions naming the knob.
func (o *Options) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), ErrInvalidOptions)
	}
	switch {
	case o.Connections < 1 || o.Connections > maxConnections:
		return bad("connections %d: want 1..%d", o.Connections, maxConnections)
	case o.QueueDepth < 1 || o.QueueDepth > maxQueueDepth:
		return bad("queue depth %d: want 1..%d", o.QueueDepth, maxQueueDepth)
	case o.IOTimeout < 0:
		return bad("io timeout %v is negative", o.IOTimeout)
	case o.ReconnectDelay < 0:
		return bad("reconnect_delay_sec %v is negative", o.ReconnectDelay)
	case o.FastIOFailTimeout < 0:
		return bad("fast_io_fail_timeout_sec %v is negative", o.FastIOFailTimeout)
	case o.CtrlrLossTimeout < 0 && o.CtrlrLossTimeout != -time.Second:
		return bad("ctrlr_loss_timeout_sec %v: want -1 (forever), 0 or more", o.CtrlrLossTimeout)
	case o.CtrlrLossTimeout == 0:
		if o.ReconnectDelay != 0 || o.FastIOFailTimeout != 0 {
			return bad("reconnect_delay_sec and fast_io_fail_timeout_sec must both be 0 when ctrlr_loss_timeout_sec is 0")
		}
		return nil
	case o.ReconnectDelay == 0:
		return bad("reconnect_delay_sec can't be 0 when ctrlr_loss_timeout_sec is not 0")
	case o.FastIOFailTimeout != 0 && o.FastIOFailTimeout < o.ReconnectDelay:
		return bad("reconnect_delay_sec %v can't be more than fast_io_fail_timeout_sec %v", o.ReconnectDelay, o.FastIOFailTimeout)
	case o.CtrlrLossTimeout > 0 && o.ReconnectDelay > o.CtrlrLossTimeout:
		return bad("reconnect_delay_sec %v can't be more than ctrlr_loss_timeout_sec %v", o.ReconnectDelay, o.CtrlrLossTimeout)
	case o.CtrlrLossTimeout > 0 && o.FastIOFailTimeout > o.CtrlrLossTimeout:
		return bad("fast_io_fail_timeout_sec %v can't be more than ctrlr_loss_timeout_sec %v", o.FastIOFailTimeout, o.CtrlrLossTimeout)
	}
	return nil
}

// forever reports whether the device never gives up.
func (o *Options) forever() bool { return o.CtrlrLossTimeout < 0 }
