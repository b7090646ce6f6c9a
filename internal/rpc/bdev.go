package rpc

import (
	"context"
	"encoding/json"
	"errors"
	"syscall"
	"time"

	"blockcache/internal/bdev"
	"blockcache/internal/excerpt"
	"blockcache/internal/jsonrpc"
)

func (a *API) registerBdev() {
	a.srv.Register("bdev_get_bdevs", a.getBdevs)
	a.srv.Register("bdev_wait_for_examine", a.waitForExamine)
}

// bdevObject is one element of bdev_get_bdevs, keys in SPDK's order.
type bdevObject struct {
	Name                      string     `json:"name"`
	Aliases                   []string   `json:"aliases"`
	ProductName               string     `json:"product_name"`
	BlockSize                 uint32     `json:"block_size"`
	NumBlocks                 uint64     `json:"num_blocks"`
	PreferredWriteAlignment   uint32     `json:"preferred_write_alignment"`
	PreferredWriteGranularity uint32     `json:"preferred_write_granularity"`
	OptimalWriteSize          uint32     `json:"optimal_write_size"`
	PreferredUnmapAlignment   uint32     `json:"preferred_unmap_alignment"`
	PreferredUnmapGranularity uint32     `json:"preferred_unmap_granularity"`
	UUID                      string     `json:"uuid"`
	AssignedRateLimits        rateLimits `json:"assigned_rate_limits"`
	Claimed                   bool       `json:"claimed"`
	ClaimType                 string     `json:"claim_type,omitempty"`
	Zoned                     bool       `json:"zoned"`
	SupportedIOTypes          ioTypes    `json:"supported_io_types"`
	DriverSpecific            any        `json:"driver_specific"`
}

type rateLimits struct {
	RWIOsPerSec    uint64 `json:"rw_ios_per_sec"`
	RWMBytesPerSec uint64 `json:"rw_mbytes_per_sec"`
	RMBytesPerSec  uint64 `json:"r_mbytes_per_sec"`
	WMBytesPerSec  uint64 `json:"w_mbytes_per_sec"`
}

// ioTypes lists SPDK's IO types in its order.
type ioTypes struct {
	Read               bool `json:"read"`
	Write              bool `json:"write"`
	Unmap              bool `json:"unmap"`
	Flush              bool `json:"flush"`
	Reset              bool `json:"reset"`
	NVMeAdmin          bool `json:"nvme_admin"`
	NVMeIO             bool `json:"nvme_io"`
	NVMeIOMD           bool `json:"nvme_io_md"`
	WriteZeroes        bool `json:"write_zeroes"`
	ZCopy              bool `json:"zcopy"`
	GetZoneInfo        bool `json:"get_zone_info"`
	ZoneManagement     bool `json:"zone_management"`
	ZoneAppend         bool `json:"zone_append"`
	Compare            bool `json:"compare"`
	CompareAndWrite    bool `json:"compare_and_write"`
	Abort              bool `json:"abort"`
	SeekHole           bool `json:"seek_hole"`
	SeekData           bool `json:"seek_data"`
	Copy               bool `json:"copy"`
	NVMeIOVMD          bool `json:"nvme_iov_md"`
	NVMeNSSR           bool `json:"nvme_nssr"`
	WriteUncorrectable bool `json:"write_uncorrectable"`
}

// describe builds the bdev object of d.
func (a *API) describe(d bdev.Device) bdevObject {
	in := d.Info()
	aliases, _ := a.svc.Registry.Aliases(in.Name)
	if aliases == nil {
		aliases = []string{}
	}
	o := bdevObject{
		Name:        in.Name,
		Aliases:     aliases,
		ProductName: in.ProductName,
		BlockSize:   in.BlockSize,
		NumBlocks:   in.NumBlocks,
		// SPDK reports the block size for these when the module sets none.
		PreferredWriteAlignment:   in.BlockSize,
		PreferredWriteGranularity: in.BlockSize,
		OptimalWriteSize:          in.BlockSize,
		PreferredUnmapAlignment:   in.BlockSize,
		PreferredUnmapGranularity: in.BlockSize,
		UUID:                      in.UUID.String(),
		SupportedIOTypes: ioTypes{
			Read:        true,
			Write:       true,
			Flush:       true,
			Reset:       true,
			Unmap:       in.Abilities.Discard,
			WriteZeroes: in.Abilities.WriteZeroes,
		},
		DriverSpecific: struct{}{},
	}
	if owner, claimed := a.svc.Registry.ClaimOwner(in.Name); claimed {
		o.Claimed, o.ClaimType = true, "exclusive_write"
		_ = owner
	}
	if ds := a.driverSpecific(in.Name); ds != nil {
		o.DriverSpecific = ds
	}
	return o
}

// driverSpecific returns the module's driver_specific object for a bdev, or
// nil for the empty object.
func (a *API) driverSpecific(name string) any {
	if ds := a.ocfDriverSpecific(name); ds != nil {
		return ds
	}
	if b := a.bases.get(name); b != nil && b.driverSpecific != nil {
		return b.driverSpecific()
	}
	return nil
}

type getBdevsParams struct {
	Name    string `json:"name"`
	Timeout uint64 `json:"timeout"`
}

func (a *API) getBdevs(ctx context.Context, params json.RawMessage) (any, error) {
	var p getBdevsParams
	if err := jsonrpc.DecodeParams(params, &p, errDecode); err != nil {
		return nil, err
	}
	if p.Name == "" {
		out := []bdevObject{}
		for _, d := range a.svc.Registry.List() {
			out = append(out, a.describe(d))
		}
		return out, nil
	}
	deadline := time.Now().Add(time.Duration(p.Timeout) * time.Millisecond)
	for {
		d, err := a.svc.Registry.Lookup(p.Name)
		if err == nil {
			return []bdevObject{a.describe(d)}, nil
		}
		if !errors.Is(err, bdev.ErrNoSuchDevice) || time.Now().After(deadline) {
			return nil, jsonrpc.ErrnoError(syscall.ENODEV).WithData("bdev %s not found", excerpt.Quote(p.Name))
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// waitForExamine returns once every examine started so far is done. Ours
// run synchronously while the bdev is registered, so there is nothing to
// wait for beyond taking the OCF manager's lock once.
func (a *API) waitForExamine(_ context.Context, params json.RawMessage) (any, error) {
	if err := jsonrpc.DecodeParams(params, &struct{}{}, errDecode); err != nil {
		return nil, err
	}
	a.svc.OCF.List("")
	return true, nil
}
