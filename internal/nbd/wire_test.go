package nbd

import (
	"errors"
	"fmt"
	"syscall"
	"testing"

	"blockcache/internal/bdev"
	"blockcache/internal/nbdproto"
)

func TestErrnoFor(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want uint32
	}{
		{nil, 0},
		{errors.New("anything"), nbdproto.EIO},
		{errReadOnly, nbdproto.EPERM},
		{syscall.EROFS, nbdproto.EPERM},
		{syscall.EACCES, nbdproto.EPERM},
		{syscall.ENOMEM, nbdproto.ENOMEM},
		{errMisaligned, nbdproto.EINVAL},
		{bdev.ErrInvalidIO, nbdproto.EINVAL},
		{errWritePastEnd, nbdproto.ENOSPC},
		{syscall.EDQUOT, nbdproto.ENOSPC},
		{syscall.EFBIG, nbdproto.ENOSPC},
		{errTooLarge, nbdproto.EOVERFLOW},
		{bdev.ErrNotSupported, nbdproto.ENOTSUP},
		{fmt.Errorf("x: %w", bdev.ErrClosed), nbdproto.ESHUTDOWN},
		{syscall.ESHUTDOWN, nbdproto.ESHUTDOWN},
		{&bdev.IOError{Op: "read", Err: syscall.EIO}, nbdproto.EIO},
		{&bdev.IOError{Op: "write", Err: syscall.ENOSPC}, nbdproto.ENOSPC},
		{syscall.EBADMSG, nbdproto.EIO}, // not an NBD value: EIO
	} {
		if got := errnoFor(tc.err); got != tc.want {
			t.Errorf("errnoFor(%v) = %d, want %d", tc.err, got, tc.want)
		}
	}
}

func TestBufferPoolClasses(t *testing.T) {
	var p bufferPool
	for _, n := range []int{1, 512, 4096, 4097, 65536, 1<<20 + 1, maxPayloadBytes} {
		b := p.get(n)
		if len(*b) != n || cap(*b) < n || cap(*b)&(cap(*b)-1) != 0 || cap(*b) < 4096 {
			t.Fatalf("get(%d): len %d cap %d", n, len(*b), cap(*b))
		}
		p.put(b)
	}
	if c := classOf(maxPayloadBytes); c != len(p.classes)-1 {
		t.Fatalf("largest payload in class %d of %d", c, len(p.classes))
	}
}
