package integration

import (
	"context"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"blockcache/internal/bdev"
	"blockcache/internal/bdev/bdevtest"
	"blockcache/internal/bdev/crashdev"
	"blockcache/internal/bdev/delay"
	"blockcache/internal/bdev/errinj"
	"blockcache/internal/bdev/file"
	"blockcache/internal/bdev/malloc"
	"blockcache/internal/bdev/nbdremote"
	"blockcache/internal/bdev/null"
	"blockcache/internal/nbd"
	"blockcache/internal/ocf"
	"blockcache/internal/ocf/ocftest"
)

const abilitiesDevBytes = 1 << 20

// The abilities each kind of device is expected to offer.
var (
	allAbilities    = bdev.Abilities{Discard: true, WriteZeroes: true, ZeroesOnDiscard: true}
	onlyWriteZeroes = bdev.Abilities{WriteZeroes: true}
	noAbilities     = bdev.Abilities{}
)

// TestAbilitiesMatchWhatDevicesDo opens every kind of device the daemon
// can create, over the inner devices that change what it can do, and checks
// that Info's Abilities are the expected ones and that the device does
// exactly what they offer (bdevtest.CheckAbilities): a device that lies
// about discard or write-zeroes fails here, and so would the NBD export's
// flags and bdev_get_bdevs' supported_io_types, which Info drives.
func TestAbilitiesMatchWhatDevicesDo(t *testing.T) {
	type kind struct {
		name string
		open func(t *testing.T) bdev.Device
		want bdev.Abilities
	}
	kinds := []kind{
		{"malloc", newMallocDev, allAbilities},
		{"null", newNullDev, onlyWriteZeroes},
		{"file", func(t *testing.T) bdev.Device { return openFile(t, scratchFile(t), file.Options{}) }, allAbilities},
		{"file/uring", func(t *testing.T) bdev.Device {
			return openFile(t, scratchFile(t), file.Options{Engine: file.EngineUring})
		}, allAbilities},
		{"file/read-only", func(t *testing.T) bdev.Device { return openFile(t, scratchFile(t), file.Options{ReadOnly: true}) }, noAbilities},
		{"file/loop", func(t *testing.T) bdev.Device { return openFile(t, loopDevice(t), file.Options{}) }, bdev.Abilities{Discard: true, WriteZeroes: true}},
		{"nbd/malloc", func(t *testing.T) bdev.Device { return openNBD(t, nbd.Export{Device: newMallocDev(t)}) }, bdev.Abilities{Discard: true, WriteZeroes: true}},
		// The server writes zero buffers for a device without WriteZeroes,
		// so the export always offers it; it offers trim only when the
		// device discards.
		{"nbd/no-abilities", func(t *testing.T) bdev.Device {
			return openNBD(t, nbd.Export{Device: bdevtest.Restrict(newMallocDev(t), noAbilities)})
		}, onlyWriteZeroes},
		{"nbd/read-only", func(t *testing.T) bdev.Device { return openNBD(t, nbd.Export{Device: newMallocDev(t), ReadOnly: true}) }, noAbilities},
		{"crashdev/malloc", func(t *testing.T) bdev.Device { return crashdev.New(newMallocDev(t)) }, allAbilities},
		{"crashdev/null", func(t *testing.T) bdev.Device { return crashdev.New(newNullDev(t)) }, onlyWriteZeroes},
		{"crashdev/clone", func(t *testing.T) bdev.Device {
			c, err := crashdev.New(newNullDev(t)).CrashClone(crashdev.CrashCloneConfig{})
			if err != nil {
				t.Fatal(err)
			}
			return c
		}, onlyWriteZeroes},
		{"delay/malloc", func(t *testing.T) bdev.Device { return newDelayDev(t, newMallocDev(t)) }, allAbilities},
		{"delay/null", func(t *testing.T) bdev.Device { return newDelayDev(t, newNullDev(t)) }, onlyWriteZeroes},
		{"delay/read-only-file", func(t *testing.T) bdev.Device {
			return newDelayDev(t, openFile(t, scratchFile(t), file.Options{ReadOnly: true}))
		}, noAbilities},
		{"errinj/malloc", func(t *testing.T) bdev.Device { return errinj.Wrap(newMallocDev(t), errinj.Any()) }, allAbilities},
		{"errinj/null", func(t *testing.T) bdev.Device { return errinj.Wrap(newNullDev(t), errinj.Any()) }, onlyWriteZeroes},
		{"error-bdev/malloc", func(t *testing.T) bdev.Device {
			d, _ := errinj.NewErrorBdev(newMallocDev(t), uuid.Nil)
			return d
		}, allAbilities},
		{"error-bdev/read-only-file", func(t *testing.T) bdev.Device {
			d, _ := errinj.NewErrorBdev(openFile(t, scratchFile(t), file.Options{ReadOnly: true}), uuid.Nil)
			return d
		}, noAbilities},
	}
	// A cache volume discards when its core does and never writes zeroes,
	// in every mode; over NBD it gains write-zeroes from the server.
	for _, mode := range ocf.Modes() {
		kinds = append(kinds,
			kind{"ocf/" + mode.String(), func(t *testing.T) bdev.Device { return newVolume(t, mode, nil) }, bdev.Abilities{Discard: true, ZeroesOnDiscard: true}},
			kind{"ocf/" + mode.String() + "/core-without-discard", func(t *testing.T) bdev.Device {
				return newVolume(t, mode, func(_ int, d bdev.Device) bdev.Device { return bdevtest.Restrict(d, onlyWriteZeroes) })
			}, noAbilities},
		)
	}
	kinds = append(kinds, kind{"nbd/ocf", func(t *testing.T) bdev.Device {
		return openNBD(t, nbd.Export{Device: newVolume(t, ocf.ModeWB, nil)})
	}, bdev.Abilities{Discard: true, WriteZeroes: true}})

	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			d := k.open(t)
			if got := d.Info().Abilities; got != k.want {
				t.Errorf("abilities %+v, want %+v", got, k.want)
			}
			bdevtest.CheckAbilities(t, d)
		})
	}
}

func newMallocDev(t *testing.T) bdev.Device {
	m, err := malloc.New("Malloc0", uuid.Nil, 512, abilitiesDevBytes/512)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func newNullDev(t *testing.T) bdev.Device {
	n, err := null.New("Null0", uuid.Nil, 512, abilitiesDevBytes/512)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

func newDelayDev(t *testing.T, inner bdev.Device) bdev.Device {
	d, err := delay.New(inner, delay.Config{Name: "Delay0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func newVolume(t *testing.T, mode ocf.Mode, wrap func(int, bdev.Device) bdev.Device) bdev.Device {
	env := ocftest.New(t, ocftest.Options{Lines: 16, Mode: mode, CoreBytes: abilitiesDevBytes, WrapCore: wrap})
	return env.Cores[0]
}

// scratchFile returns the path of a new sparse file of abilitiesDevBytes.
func scratchFile(t *testing.T) string {
	p := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, abilitiesDevBytes); err != nil {
		t.Fatal(err)
	}
	return p
}

func openFile(t *testing.T, path string, opts file.Options) bdev.Device {
	d, err := file.Open("AIO0", path, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// loopDevice attaches a loop device over a scratch file (the test runs as
// root, as the file package's own block-device tests do) and returns its
// path.
func loopDevice(t *testing.T) string {
	out, err := exec.Command("losetup", "--find", "--show", scratchFile(t)).CombinedOutput()
	if err != nil {
		t.Fatalf("cannot attach a loop device (the test needs root and losetup): %v: %s", err, out)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if out, err := exec.Command("losetup", "-d", dev).CombinedOutput(); err != nil {
			t.Errorf("detach %s: %v: %s", dev, err, out)
		}
	})
	return dev
}

// openNBD serves e (named "disk") from an in-process NBD server and returns
// an NBD client bdev connected to it.
func openNBD(t *testing.T, e nbd.Export) bdev.Device {
	e.Name = "disk"
	srv, err := nbd.NewServer(slog.New(slog.DiscardHandler), nbd.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.AddExport(e); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	uri, err := nbdremote.ParseURI("nbd://" + l.Addr().String() + "/disk")
	if err != nil {
		t.Fatal(err)
	}
	d, err := nbdremote.Open("Nbd0", uri, uuid.Nil, nbdremote.DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		d.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	return d
}
