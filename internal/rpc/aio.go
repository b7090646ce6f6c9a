package rpc

import (
	"context"
	"encoding/json"
	"fmt"

	"blockcache/internal/bdev"
	"blockcache/internal/bdev/file"
	"blockcache/internal/jsonrpc"
)

// aioParams are bdev_aio_create's parameters; rpc.py always sends readonly,
// fallocate and nowait. The file bdev serves them with pread/pwrite; nowait
// and fallocate are accepted and recorded. The bdev holds its file alone
// for its life: a file held elsewhere is refused with -16 (file.ErrInUse
// wraps EBUSY), anything but a regular file or block device with -22.
//
// The file is opened with O_DIRECT, as SPDK's aio bdev does, or buffered
// where its file system refuses O_DIRECT (logged as a warning). Buffered
// (ours) asks for the page cache.
type aioParams struct {
	Name      string `json:"name" rpc:"required"`
	Filename  string `json:"filename" rpc:"required"`
	BlockSize uint32 `json:"block_size"`
	UUID      string `json:"uuid"`
	ReadOnly  bool   `json:"readonly"`
	Fallocate bool   `json:"fallocate"`
	NoWait    bool   `json:"nowait"`
	Buffered  bool   `json:"buffered"`
}

// aioConfig is the config entry, in SPDK's key order; block_size appears
// only when it was given.
type aioConfig struct {
	Name      string `json:"name"`
	BlockSize uint32 `json:"block_size,omitempty"`
	Filename  string `json:"filename"`
	ReadOnly  bool   `json:"readonly"`
	Fallocate bool   `json:"fallocate"`
	UUID      string `json:"uuid"`
	NoWait    bool   `json:"nowait"`
	Buffered  bool   `json:"buffered,omitempty"`
}

// aioDriverSpecific is SPDK's aio driver_specific. A bdev that uses the
// page cache adds buffered: true (ours), and direct_refused, the reason,
// when it asked for direct IO; a direct bdev, SPDK's only kind, shows
// SPDK's shape.
type aioDriverSpecific struct {
	AIO struct {
		Filename          string `json:"filename"`
		BlockSizeOverride bool   `json:"block_size_override"`
		ReadOnly          bool   `json:"readonly"`
		Fallocate         bool   `json:"fallocate"`
		NoWait            bool   `json:"nowait"`
		Buffered          bool   `json:"buffered,omitempty"`
		DirectRefused     string `json:"direct_refused,omitempty"`
	} `json:"aio"`
}

func (a *API) aioCreate(_ context.Context, params json.RawMessage) (any, error) {
	var p aioParams
	if err := jsonrpc.DecodeParams(params, &p, errDecode); err != nil {
		return nil, err
	}
	id, err := parseUUID(p.UUID)
	if err != nil {
		return nil, err
	}
	// A taken name is SPDK's -17 whatever the file: ask before opening it,
	// since a second bdev on the same file would be refused as busy first.
	if _, err := a.svc.Registry.Lookup(p.Name); err == nil {
		return nil, errnoReply(fmt.Errorf("bdev_aio_create: name %q is taken: %w", p.Name, bdev.ErrExists))
	}
	d, err := file.Open(p.Name, p.Filename, file.Options{BlockSize: p.BlockSize, ReadOnly: p.ReadOnly, UUID: id,
		Direct: !p.Buffered, BufferedFallback: true})
	if err != nil {
		return nil, errnoReply(err)
	}
	var ds aioDriverSpecific
	if refused := d.DirectRefused(); refused != nil {
		a.svc.Log.Warn("bdev_aio_create: direct IO refused; the bdev uses the page cache", "name", p.Name, "path", p.Filename, "reason", refused)
		ds.AIO.DirectRefused = refused.Error()
	}
	cfg := aioConfig{Name: p.Name, BlockSize: p.BlockSize, Filename: p.Filename, ReadOnly: p.ReadOnly,
		Fallocate: p.Fallocate, UUID: d.Info().UUID.String(), NoWait: p.NoWait, Buffered: p.Buffered}
	ds.AIO.Filename, ds.AIO.BlockSizeOverride = p.Filename, p.BlockSize != 0
	ds.AIO.ReadOnly, ds.AIO.Fallocate, ds.AIO.NoWait = p.ReadOnly, p.Fallocate, p.NoWait
	ds.AIO.Buffered = !d.Direct()
	return a.created(&baseBdev{name: p.Name, module: "aio", dev: d, config: fixedConfig("bdev_aio_create", cfg),
		driverSpecific: func() any { return ds }})
}
