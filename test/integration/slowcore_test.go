// Package integration holds tests that wire the cache engine to a transport
// in process, for properties that only the two together show; the tests in
// test/e2e drive the real binary instead.
package integration

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/google/uuid"

	"blockcache/internal/bdev"
	"blockcache/internal/bdev/bdevtest"
	"blockcache/internal/bdev/malloc"
	"blockcache/internal/nbd"
	"blockcache/internal/nbd/nbdclient"
	"blockcache/internal/ocf"
	"blockcache/internal/ocf/ocftest"
)

// On one NBD connection to a cached volume, a read miss whose core read is
// held at a gate does not stop a later cache hit, a later write hit, or a
// request to another export, from completing while it is held.
func TestHitsDoNotWaitBehindAMiss(t *testing.T) {
	const missOff = 1 << 20
	var gate *bdevtest.IOGate
	env := ocftest.New(t, ocftest.Options{Lines: 64, Mode: ocf.ModeWT, CoreBytes: 4 << 20, SeqCutoff: ocf.CutoffNever{},
		WrapCore: func(_ int, d bdev.Device) bdev.Device {
			gate = bdevtest.NewIOGate(d, func(write bool, off, _ int64) bool { return !write && off >= missOff })
			return gate
		}})
	defer gate.Release()
	other, err := malloc.New("other", uuid.Nil, 512, 2048)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := nbd.NewServer(slog.New(slog.DiscardHandler), nbd.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range []nbd.Export{{Name: "vol", Device: env.Cores[0]}, {Name: "other", Device: other}} {
		if err := srv.AddExport(e); err != nil {
			t.Fatal(err)
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	defer func() {
		gate.Release()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	}()
	vol, err := nbdclient.Dial("tcp", l.Addr().String(), nbdclient.Options{Export: "vol"})
	if err != nil {
		t.Fatal(err)
	}
	defer vol.Close()

	// Lines 0 and 1 are cached (write-through inserts them).
	data := bytes.Repeat([]byte{0x3c}, 8192)
	if err := vol.WriteAt(data, 0, 0); err != nil {
		t.Fatal(err)
	}

	missDone := make(chan error, 1)
	go func() { missDone <- vol.ReadAt(make([]byte, 4096), missOff) }()
	if !gate.WaitHeld(1, 10*time.Second) {
		t.Fatal("the miss never reached the core")
	}

	later := map[string]func() error{
		"cache hit": func() error {
			got := make([]byte, 4096)
			if err := vol.ReadAt(got, 0); err != nil {
				return err
			}
			if !bytes.Equal(got, data[:4096]) {
				t.Error("the hit returned wrong data")
			}
			return nil
		},
		"write hit": func() error { return vol.WriteAt(data[:4096], 4096, 0) },
		"other export": func() error {
			c, err := nbdclient.Dial("tcp", l.Addr().String(), nbdclient.Options{Export: "other"})
			if err != nil {
				return err
			}
			defer c.Close()
			return c.ReadAt(make([]byte, 4096), 0)
		},
	}
	done := make(chan struct {
		name string
		err  error
	}, len(later))
	for name, f := range later {
		go func() {
			done <- struct {
				name string
				err  error
			}{name, f()}
		}()
	}
	for range later {
		select {
		case r := <-done:
			if r.err != nil {
				t.Fatalf("%s while the miss is held: %v", r.name, r.err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a later request did not complete while the miss was held")
		}
	}
	select {
	case err := <-missDone:
		t.Fatalf("the held miss completed (%v) before its core read was released", err)
	default:
	}
	gate.Release()
	if err := <-missDone; err != nil {
		t.Fatal(err)
	}
}
