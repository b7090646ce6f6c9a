package ocf_test

import (
	"bytes"
	"reflect"
	"testing"
	"time"

	"blockcache/internal/bdev"
	"blockcache/internal/bdev/bdevtest"
	"blockcache/internal/ocf"
	"blockcache/internal/ocf/ocftest"
)

// TryReadAt serves hits and leaves anything that may wait for the core to
// ReadAt, touching nothing; while a miss waits for the core, hits and a
// write to another line proceed.
func TestTryReadAtServesHitsOnly(t *testing.T) {
	const missOff = 64 << 10
	var gate *bdevtest.IOGate
	env := ocftest.New(t, ocftest.Options{Lines: 64, Mode: ocf.ModeWT, SeqCutoff: ocf.CutoffNever{},
		WrapCore: func(_ int, d bdev.Device) bdev.Device {
			gate = bdevtest.NewIOGate(d, func(write bool, off, _ int64) bool { return !write && off >= missOff })
			return gate
		}})
	defer gate.Release()
	vol := env.Cores[0]
	data := bytes.Repeat([]byte{0xa5}, 4096)
	if err := vol.WriteAt(data, 0, false); err != nil {
		t.Fatal(err)
	}

	got := make([]byte, 4096)
	if served, err := vol.TryReadAt(got, 0); !served || err != nil || !bytes.Equal(got, data) {
		t.Fatalf("TryReadAt of a hit: served %v, err %v, data equal %v", served, err, bytes.Equal(got, data))
	}
	before := vol.Stats()
	if served, err := vol.TryReadAt(got, missOff); served || err != nil {
		t.Fatalf("TryReadAt of a miss: served %v, err %v; want not served", served, err)
	}
	if after := vol.Stats(); !reflect.DeepEqual(before, after) || gate.Held() != 0 {
		t.Fatalf("a miss not served changed the statistics or reached the core:\n before %+v\n after  %+v", before, after)
	}
	if served, _ := vol.TryWriteAt(data, 4096, false); served {
		t.Fatal("TryWriteAt served a write-through write on a core that may wait")
	}

	missDone := make(chan error, 1)
	go func() { missDone <- vol.ReadAt(make([]byte, 4096), missOff) }()
	if !gate.WaitHeld(1, 10*time.Second) {
		t.Fatal("the miss never reached the core")
	}
	if served, err := vol.TryReadAt(got, 0); !served || err != nil {
		t.Fatalf("a hit while a miss waits for the core: served %v, err %v", served, err)
	}
	writeDone := make(chan error, 1)
	go func() { writeDone <- vol.WriteAt(data, 8192, false) }()
	select {
	case err := <-writeDone:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a write to another line waited for the held miss")
	}
	select {
	case err := <-missDone:
		t.Fatalf("the held miss returned (%v)", err)
	default:
	}
	gate.Release()
	if err := <-missDone; err != nil {
		t.Fatal(err)
	}
}

// A volume whose cache and core devices are both in memory never waits for
// a device: it serves every TryReadAt and TryWriteAt, misses included.
func TestImmediateVolumeServesEverything(t *testing.T) {
	env := ocftest.New(t, ocftest.Options{Lines: 16, Mode: ocf.ModeWT, SeqCutoff: ocf.CutoffNever{}})
	vol := env.Cores[0]
	data := bytes.Repeat([]byte{0x5a}, 4096)
	if served, err := vol.TryWriteAt(data, 12288, false); !served || err != nil {
		t.Fatalf("TryWriteAt: served %v, err %v", served, err)
	}
	got := make([]byte, 8192)
	if served, err := vol.TryReadAt(got, 8192); !served || err != nil {
		t.Fatalf("TryReadAt of a partial miss: served %v, err %v", served, err)
	}
	if !bytes.Equal(got[4096:], data) || !bytes.Equal(got[:4096], make([]byte, 4096)) {
		t.Fatal("TryReadAt returned wrong data")
	}
}
