package rpc

import (
	"context"
	"encoding/json"
	"math"
	"syscall"
	"time"

	"github.com/google/uuid"

	"blockcache/internal/bdev"
	"blockcache/internal/bdev/delay"
	"blockcache/internal/bdev/errinj"
	"blockcache/internal/excerpt"
	"blockcache/internal/jsonrpc"
)

// The delay and error bdevs are vbdevs over one base bdev, which they claim.
// When the base is hot-removed, they are removed too.

func (a *API) registerWrappers() {
	a.srv.Register("bdev_delay_create", a.mutating(a.delayCreate))
	a.srv.Register("bdev_delay_delete", a.mutating(a.deleteBase("delay")))
	a.srv.Register("bdev_delay_update_latency", a.mutating(a.delayUpdateLatency))
	a.srv.Register("bdev_error_create", a.mutating(a.errorCreate))
	a.srv.Register("bdev_error_delete", a.mutating(a.deleteBase("error")))
	a.srv.Register("bdev_error_inject_error", a.errorInject)
}

// claimBase claims base for the wrapper called name; when the base is
// hot-removed, the wrapper is unregistered and closed.
func (a *API) claimBase(base, name, module string) (bdev.Device, *bdev.Claim, error) {
	dev, err := a.svc.Registry.Lookup(base)
	if err != nil {
		return nil, nil, errnoReply(err)
	}
	claim, err := a.svc.Registry.Claim(base, "bdev_"+module+" "+name, func() {
		if b := a.bases.get(name); b != nil && b.module == module {
			// The wrapper is gone for good, as deleted: so is its export.
			done := a.deleting(name)
			done(a.removeBase(b, "base bdev "+base+" removed") == nil)
		}
	})
	if err != nil {
		return nil, nil, errnoReply(err)
	}
	return dev, claim, nil
}

// delayParams are bdev_delay_create's parameters (latencies in µs), in the
// key order its config entry uses. max_inflight is ours: the most IOs in the
// delay bdev at once, 0 or absent for no limit (SPDK's behaviour); configs
// carry it only when set.
type delayParams struct {
	BaseBdevName    string `json:"base_bdev_name" rpc:"required"`
	Name            string `json:"name" rpc:"required"`
	AvgReadLatency  uint64 `json:"avg_read_latency" rpc:"required"`
	P99ReadLatency  uint64 `json:"p99_read_latency" rpc:"required"`
	AvgWriteLatency uint64 `json:"avg_write_latency" rpc:"required"`
	P99WriteLatency uint64 `json:"p99_write_latency" rpc:"required"`
	UUID            string `json:"uuid,omitempty"`
	MaxInflight     uint32 `json:"max_inflight,omitempty"`
}

func us(v uint64) time.Duration { return time.Duration(v) * time.Microsecond }

// maxLatencyUS is the longest latency, in µs, that a time.Duration holds
// (about 292 years); SPDK converts to ticks without a check and wraps.
const maxLatencyUS = math.MaxInt64 / uint64(time.Microsecond)

// latencyParam is a latency parameter's name and value in µs.
type latencyParam struct {
	name string
	us   uint64
}

// checkLatencies refuses a latency that would overflow a time.Duration,
// which would otherwise wrap to a negative or a short delay.
func checkLatencies(ls ...latencyParam) error {
	for _, l := range ls {
		if l.us > maxLatencyUS {
			return jsonrpc.ErrnoError(syscall.EINVAL).WithData("%s %d µs overflows (at most %d)", l.name, l.us, maxLatencyUS)
		}
	}
	return nil
}

func (a *API) delayCreate(_ context.Context, params json.RawMessage) (any, error) {
	var p delayParams
	if err := jsonrpc.DecodeParams(params, &p, errDecode); err != nil {
		return nil, err
	}
	if err := checkLatencies(latencyParam{"avg_read_latency", p.AvgReadLatency}, latencyParam{"p99_read_latency", p.P99ReadLatency},
		latencyParam{"avg_write_latency", p.AvgWriteLatency}, latencyParam{"p99_write_latency", p.P99WriteLatency}); err != nil {
		return nil, err
	}
	id, err := parseUUID(p.UUID)
	if err != nil {
		return nil, err
	}
	base, claim, err := a.claimBase(p.BaseBdevName, p.Name, "delay")
	if err != nil {
		return nil, err
	}
	d, err := delay.New(base, delay.Config{Name: p.Name, UUID: id, Latencies: delay.Latencies{
		AvgRead: us(p.AvgReadLatency), P99Read: us(p.P99ReadLatency),
		AvgWrite: us(p.AvgWriteLatency), P99Write: us(p.P99WriteLatency),
	}, MaxInflight: int(p.MaxInflight), Pollers: a.svc.Pollers})
	if err != nil {
		claim.Release()
		return nil, jsonrpc.ErrnoError(syscall.EINVAL).WithData("%v", err)
	}
	p.UUID = d.Info().UUID.String()
	b := &baseBdev{name: p.Name, module: "delay", dev: d, claim: claim, deps: []string{p.BaseBdevName}}
	b.config = func() configEntry {
		cfg := p
		l := d.Latencies()
		cfg.AvgReadLatency, cfg.P99ReadLatency = uint64(l.AvgRead/time.Microsecond), uint64(l.P99Read/time.Microsecond)
		cfg.AvgWriteLatency, cfg.P99WriteLatency = uint64(l.AvgWrite/time.Microsecond), uint64(l.P99Write/time.Microsecond)
		return configEntry{Method: "bdev_delay_create", Params: cfg}
	}
	if err := a.registerBase(b); err != nil {
		claim.Release()
		return nil, err
	}
	return p.Name, nil
}

type delayUpdateParams struct {
	DelayBdevName string `json:"delay_bdev_name" rpc:"required"`
	LatencyType   string `json:"latency_type" rpc:"required"`
	LatencyUS     uint64 `json:"latency_us" rpc:"required"`
}

func (a *API) delayUpdateLatency(_ context.Context, params json.RawMessage) (any, error) {
	var p delayUpdateParams
	if err := jsonrpc.DecodeParams(params, &p, errDecode); err != nil {
		return nil, err
	}
	b := a.bases.get(p.DelayBdevName)
	if b == nil || b.module != "delay" {
		return nil, jsonrpc.ErrnoError(syscall.ENODEV).WithData("no delay bdev named %s", excerpt.Quote(p.DelayBdevName))
	}
	if err := checkLatencies(latencyParam{"latency_us", p.LatencyUS}); err != nil {
		return nil, err
	}
	kind, err := delay.ParseLatencyKind(p.LatencyType)
	if err != nil {
		return nil, jsonrpc.ErrnoError(syscall.EINVAL).WithData("%v", err)
	}
	if err := b.dev.(*delay.Device).SetLatency(kind, us(p.LatencyUS)); err != nil {
		return nil, jsonrpc.ErrnoError(syscall.EINVAL).WithData("%v", err)
	}
	return true, nil
}

// errorCreateParams are bdev_error_create's parameters and config entry.
type errorCreateParams struct {
	BaseName string `json:"base_name" rpc:"required"`
	UUID     string `json:"uuid,omitempty"`
}

func (a *API) errorCreate(_ context.Context, params json.RawMessage) (any, error) {
	var p errorCreateParams
	if err := jsonrpc.DecodeParams(params, &p, errDecode); err != nil {
		return nil, err
	}
	id, err := parseUUID(p.UUID)
	if err != nil {
		return nil, err
	}
	name := "EE_" + p.BaseName
	base, claim, err := a.claimBase(p.BaseName, name, "error")
	if err != nil {
		return nil, err
	}
	if id == uuid.Nil {
		id = uuid.New()
	}
	d, inj := errinj.NewErrorBdev(base, id)
	p.UUID = id.String()
	b := &baseBdev{name: name, module: "error", dev: d, claim: claim, injector: inj, deps: []string{p.BaseName},
		config: fixedConfig("bdev_error_create", p)}
	if err := a.registerBase(b); err != nil {
		claim.Release()
		return nil, err
	}
	return name, nil
}

type errorInjectParams struct {
	Name          string `json:"name" rpc:"required"`
	IOType        string `json:"io_type" rpc:"required"`
	ErrorType     string `json:"error_type" rpc:"required"`
	Num           uint32 `json:"num"`
	QueueDepth    uint64 `json:"queue_depth"`
	CorruptOffset uint64 `json:"corrupt_offset"`
	CorruptValue  uint8  `json:"corrupt_value"`
}

func (a *API) errorInject(_ context.Context, params json.RawMessage) (any, error) {
	p := errorInjectParams{Num: 1}
	if err := jsonrpc.DecodeParams(params, &p, errDecode); err != nil {
		return nil, err
	}
	b := a.bases.get(p.Name)
	if b == nil || b.module != "error" {
		return nil, jsonrpc.ErrnoError(syscall.ENODEV).WithData("no error bdev named %s", excerpt.Quote(p.Name))
	}
	ioType, err := errinj.ParseIOType(p.IOType)
	if err != nil {
		return nil, jsonrpc.ErrnoError(syscall.EINVAL).WithData("io_type: %v", err)
	}
	opts := errinj.InjectOpts{IOType: ioType, Num: p.Num, CorruptOffset: p.CorruptOffset, CorruptValue: p.CorruptValue}
	if ioType != errinj.IOTypeClear {
		if opts.ErrorType, err = errinj.ParseErrorType(p.ErrorType); err != nil {
			return nil, jsonrpc.ErrnoError(syscall.EINVAL).WithData("error_type: %v", err)
		}
	}
	if err := b.injector.Inject(opts); err != nil {
		return nil, jsonrpc.ErrnoError(syscall.EINVAL).WithData("%v", err)
	}
	return true, nil
}
