package rpc

import (
	"context"
	"encoding/json"
	"fmt"
	"syscall"

	"blockcache/internal/bdev"
	"blockcache/internal/bdev/file"
	"blockcache/internal/jsonrpc"
)

// uringParams are bdev_uring_create's parameters as rpc.py sends them:
// filename and name, block_size and uuid when given. The bdev is a file
// bdev whose IO goes through io_uring (file.EngineUring), opened with
// O_DIRECT as SPDK's uring bdev is, or buffered where the file system
// refuses O_DIRECT (logged as a warning). Where the kernel refuses
// io_uring the reply is -95, naming the reason.
type uringParams struct {
	Name      string `json:"name" rpc:"required"`
	Filename  string `json:"filename" rpc:"required"`
	BlockSize uint32 `json:"block_size"`
	UUID      string `json:"uuid"`
}

// uringConfig is the config entry, in SPDK's key order; SPDK writes the
// bdev's block size whether or not it was given.
type uringConfig struct {
	Name      string `json:"name"`
	BlockSize uint32 `json:"block_size"`
	Filename  string `json:"filename"`
	UUID      string `json:"uuid"`
}

// uringDriverSpecific is SPDK's uring driver_specific. A bdev that fell
// back to the page cache adds buffered: true and direct_refused, the reason
// (ours, as the aio bdev's); a direct bdev shows SPDK's shape.
type uringDriverSpecific struct {
	Uring struct {
		Filename      string `json:"filename"`
		Buffered      bool   `json:"buffered,omitempty"`
		DirectRefused string `json:"direct_refused,omitempty"`
	} `json:"uring"`
}

// openFunc opens a file device on io_uring (file.OpenUring); tests
// substitute a kernel without io_uring.
type openFunc func(name, path string, opts file.Options) (*file.Device, error)

func (a *API) registerUring() {
	a.srv.Register("bdev_uring_create", a.mutating(func(_ context.Context, params json.RawMessage) (any, error) {
		return a.uringCreate(params, file.OpenUring)
	}))
	a.srv.Register("bdev_uring_delete", a.mutating(a.deleteBase("uring")))
}

func (a *API) uringCreate(params json.RawMessage, open openFunc) (any, error) {
	var p uringParams
	if err := jsonrpc.DecodeParams(params, &p, errDecode); err != nil {
		return nil, err
	}
	id, err := parseUUID(p.UUID)
	if err != nil {
		return nil, err
	}
	if bs := p.BlockSize; bs != 0 && (bs < bdev.SectorSize || bs&(bs-1) != 0) {
		return nil, jsonrpc.ErrnoError(syscall.EINVAL).WithData("block_size %d is not a power of two of at least %d", bs, bdev.SectorSize)
	}
	if _, err := a.svc.Registry.Lookup(p.Name); err == nil {
		return nil, errnoReply(fmt.Errorf("bdev_uring_create: name %q is taken: %w", p.Name, bdev.ErrExists))
	}
	d, err := open(p.Name, p.Filename, file.Options{BlockSize: p.BlockSize, UUID: id,
		Direct: true, BufferedFallback: true, Engine: file.EngineUring, Poll: a.svc.IOPoll, Pollers: a.svc.Pollers})
	if err != nil {
		return nil, errnoReply(err)
	}
	var ds uringDriverSpecific
	ds.Uring.Filename, ds.Uring.Buffered = p.Filename, !d.Direct()
	if refused := d.DirectRefused(); refused != nil {
		a.svc.Log.Warn("bdev_uring_create: direct IO refused; the bdev uses the page cache", "name", p.Name, "path", p.Filename, "reason", refused)
		ds.Uring.DirectRefused = refused.Error()
	}
	cfg := uringConfig{Name: p.Name, BlockSize: d.Info().BlockSize, Filename: p.Filename, UUID: d.Info().UUID.String()}
	return a.created(&baseBdev{name: p.Name, module: "uring", dev: d, config: fixedConfig("bdev_uring_create", cfg),
		driverSpecific: func() any { return ds }})
}
