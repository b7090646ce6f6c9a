package rpc

import (
	"context"
	"encoding/json"

	"blockcache/internal/bdev/null"
	"blockcache/internal/jsonrpc"
)

// nullParams are bdev_null_create's parameters; rpc.py always sends
// dif_is_head_of_md.
type nullParams struct {
	Name                      string `json:"name" rpc:"required"`
	NumBlocks                 uint64 `json:"num_blocks" rpc:"required"`
	BlockSize                 uint32 `json:"block_size" rpc:"required"`
	UUID                      string `json:"uuid"`
	PhysicalBlockSize         uint32 `json:"physical_block_size"`
	MdSize                    uint32 `json:"md_size"`
	DifType                   int32  `json:"dif_type"`
	DifIsHeadOfMd             bool   `json:"dif_is_head_of_md"`
	DifPiFormat               int32  `json:"dif_pi_format"`
	PreferredWriteAlignment   uint32 `json:"preferred_write_alignment"`
	PreferredWriteGranularity uint32 `json:"preferred_write_granularity"`
	OptimalWriteSize          uint32 `json:"optimal_write_size"`
	PreferredUnmapAlignment   uint32 `json:"preferred_unmap_alignment"`
	PreferredUnmapGranularity uint32 `json:"preferred_unmap_granularity"`
}

// nullConfig is the config entry, in SPDK's key order.
type nullConfig struct {
	Name          string `json:"name"`
	NumBlocks     uint64 `json:"num_blocks"`
	BlockSize     uint32 `json:"block_size"`
	UUID          string `json:"uuid"`
	MdSize        uint32 `json:"md_size"`
	DifType       int32  `json:"dif_type"`
	DifIsHeadOfMd bool   `json:"dif_is_head_of_md"`
	DifPiFormat   int32  `json:"dif_pi_format"`
}

func (a *API) nullCreate(_ context.Context, params json.RawMessage) (any, error) {
	var p nullParams
	if err := jsonrpc.DecodeParams(params, &p, errDecode); err != nil {
		return nil, err
	}
	id, err := ramBdevUUID(p.MdSize, p.DifType, p.UUID)
	if err != nil {
		return nil, err
	}
	d, err := null.New(p.Name, id, p.BlockSize, p.NumBlocks)
	if err != nil {
		return nil, errnoReply(err)
	}
	cfg := nullConfig{Name: p.Name, NumBlocks: p.NumBlocks, BlockSize: p.BlockSize, UUID: d.Info().UUID.String()}
	return a.created(&baseBdev{name: p.Name, module: "null", dev: d, config: fixedConfig("bdev_null_create", cfg)})
}
