package rpc

import (
	"errors"
	"fmt"
	"syscall"
	"testing"
	"time"

	"blockcache/internal/bdev/nbdremote"
)

// TestNBDClientResolve: unset knobs take blockcache's defaults, bounded by
// the knobs given so that SPDK's rules hold.
func TestNBDClientResolve(t *testing.T) {
	i32 := func(v int32) *int32 { return &v }
	u32 := func(v uint32) *uint32 { return &v }
	tests := []struct {
		p                 nbdClientParams
		delay, fail, ioTO uint32
		lossSec           int32
	}{
		{p: nbdClientParams{}, delay: 1, lossSec: -1, fail: 30, ioTO: 30},
		{p: nbdClientParams{CtrlrLossTimeoutSec: i32(0)}, delay: 0, lossSec: 0, fail: 0, ioTO: 30},
		{p: nbdClientParams{CtrlrLossTimeoutSec: i32(10)}, delay: 1, lossSec: 10, fail: 10, ioTO: 30},
		{p: nbdClientParams{CtrlrLossTimeoutSec: i32(60)}, delay: 1, lossSec: 60, fail: 30, ioTO: 30},
		{p: nbdClientParams{ReconnectDelaySec: u32(5), FastIOFailTimeoutSec: u32(0), IOTimeoutSec: u32(0)}, delay: 5, lossSec: -1, fail: 0, ioTO: 0},
	}
	for i, tc := range tests {
		o, cfg := tc.p.resolve()
		if cfg.ReconnectDelaySec != tc.delay || cfg.CtrlrLossTimeoutSec != tc.lossSec || cfg.FastIOFailTimeoutSec != tc.fail || cfg.IOTimeoutSec != tc.ioTO {
			t.Errorf("%d: config %+v", i, cfg)
		}
		if err := o.Validate(); err != nil {
			t.Errorf("%d: resolved options invalid: %v", i, err)
		}
		if o.CtrlrLossTimeout != time.Duration(tc.lossSec)*time.Second || o.FastIOFailTimeout != time.Duration(tc.fail)*time.Second {
			t.Errorf("%d: options %+v", i, o)
		}
	}
}

// TestNBDClientErrno: the client's errors map to the errnos docs/rpc.md
// lists.
func TestNBDClientErrno(t *testing.T) {
	tests := []struct {
		err  error
		want syscall.Errno
	}{
		{fmt.Errorf("x: %w", nbdremote.ErrBadURI), syscall.EINVAL},
		{fmt.Errorf("x: %w", nbdremote.ErrInvalidOptions), syscall.EINVAL},
		{fmt.Errorf("x: %w", nbdremote.ErrExportRefused), syscall.ENXIO},
		{fmt.Errorf("x: %w", nbdremote.ErrProtocol), syscall.EPROTO},
		{fmt.Errorf("x: %w", nbdremote.ErrTimeout), syscall.ETIMEDOUT},
		{fmt.Errorf("x: %w", nbdremote.ErrTLSNotSupported), syscall.EOPNOTSUPP},
		{fmt.Errorf("x: %w", syscall.ECONNREFUSED), syscall.ECONNREFUSED},
		{fmt.Errorf("x: %w", nbdremote.ErrLost), syscall.ENODEV},
		{errors.New("other"), syscall.EIO},
	}
	for _, tc := range tests {
		if got := errnoOf(tc.err); got != tc.want {
			t.Errorf("errnoOf(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
