package rpc

import (
	"context"
	"encoding/json"

	"blockcache/internal/bdev/malloc"
	"blockcache/internal/jsonrpc"
)

// mallocParams are bdev_malloc_create's parameters; rpc.py always sends
// md_interleave and dif_is_head_of_md. The same struct, in this key order,
// is the config entry framework_get_config writes.
type mallocParams struct {
	Name              string `json:"name"`
	NumBlocks         uint64 `json:"num_blocks" rpc:"required"`
	BlockSize         uint32 `json:"block_size" rpc:"required"`
	PhysicalBlockSize uint32 `json:"physical_block_size"`
	UUID              string `json:"uuid"`
	OptimalIOBoundary uint32 `json:"optimal_io_boundary"`
	MdSize            uint32 `json:"md_size"`
	MdInterleave      bool   `json:"md_interleave,omitempty"`
	DifType           int32  `json:"dif_type"`
	DifIsHeadOfMd     bool   `json:"dif_is_head_of_md"`
	DifPiFormat       int32  `json:"dif_pi_format"`
	NumaID            int32  `json:"numa_id"`
}

func (a *API) registerBaseModules() {
	a.srv.Register("bdev_malloc_create", a.mutating(a.mallocCreate))
	a.srv.Register("bdev_malloc_delete", a.mutating(a.deleteBase("malloc")))
	a.srv.Register("bdev_aio_create", a.mutating(a.aioCreate))
	a.srv.Register("bdev_aio_delete", a.mutating(a.deleteBase("aio")))
	a.srv.Register("bdev_null_create", a.mutating(a.nullCreate))
	a.srv.Register("bdev_null_delete", a.mutating(a.deleteBase("null")))
	a.registerNBDClient()
}

func (a *API) mallocCreate(_ context.Context, params json.RawMessage) (any, error) {
	p := mallocParams{NumaID: -1}
	if err := jsonrpc.DecodeParams(params, &p, errDecode); err != nil {
		return nil, err
	}
	id, err := ramBdevUUID(p.MdSize, p.DifType, p.UUID)
	if err != nil {
		return nil, err
	}
	if p.Name == "" {
		p.Name = a.bases.autoName(a.svc.Registry, "Malloc")
	}
	a.sizing.Lock()
	d, err := malloc.New(p.Name, id, p.BlockSize, p.NumBlocks)
	a.sizing.Unlock()
	if err != nil {
		return nil, errnoReply(err)
	}
	p.UUID = d.Info().UUID.String()
	if p.PhysicalBlockSize == 0 {
		p.PhysicalBlockSize = p.BlockSize
	}
	p.MdInterleave = false
	cfg := p
	return a.created(&baseBdev{name: p.Name, module: "malloc", dev: d, config: fixedConfig("bdev_malloc_create", cfg)})
}
