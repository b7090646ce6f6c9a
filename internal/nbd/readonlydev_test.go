package nbd

import (
	"syscall"
	"testing"

	"github.com/google/uuid"

	"blockcache/internal/bdev"
	"blockcache/internal/bdev/bdevtest"
	"blockcache/internal/bdev/delay"
	"blockcache/internal/bdev/errinj"
	"blockcache/internal/nbd/nbdclient"
	"blockcache/internal/nbdproto"
)

// TestReadOnlyDeviceExportsReadOnly: exporting a read-only device (a file
// bdev opened read-only, or a delay or error bdev stacked on one) without
// asking for a read-only export still advertises NBD_FLAG_READ_ONLY and
// nothing writable (no FUA, no WRITE_ZEROES), and refuses writes and
// write-zeroes with EPERM.
func TestReadOnlyDeviceExportsReadOnly(t *testing.T) {
	for _, tc := range []struct {
		name string
		wrap func(t *testing.T, d bdev.Device) bdev.Device
	}{
		{"file", func(_ *testing.T, d bdev.Device) bdev.Device { return d }},
		{"delay", func(t *testing.T, d bdev.Device) bdev.Device {
			dd, err := delay.New(d, delay.Config{Name: "Delay0"})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { dd.Close() })
			return dd
		}},
		{"errinj", func(_ *testing.T, d bdev.Device) bdev.Device {
			e, _ := errinj.NewErrorBdev(d, uuid.Nil)
			return e
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dev := bdevtest.NewReadOnlyFile(t, "golden", 1<<20)
			ts := startServer(t, Export{Name: "rodev", Device: tc.wrap(t, dev)})
			c, err := ts.handshake(t, stdFlags).Go("rodev")
			if err != nil {
				t.Fatal(err)
			}
			c.Close()
			want := nbdclient.FlagHasFlags | nbdclient.FlagSendFlush | nbdclient.FlagReadOnly | nbdclient.FlagCanMultiConn
			if c.Export.Flags != want {
				t.Fatalf("flags %v, want %v", nbdproto.TxFlags(c.Export.Flags), nbdproto.TxFlags(want))
			}
			cl := ts.dial(t, nbdclient.Options{Export: "rodev"})
			for _, req := range []nbdclient.Request{
				{Type: nbdclient.CmdWrite, Length: 512, Payload: make([]byte, 512)},
				{Type: nbdclient.CmdWriteZeroes, Length: 512},
			} {
				r, err := cl.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				wantErrno(t, "write to a read-only device", r.Err, syscall.EPERM)
			}
		})
	}
}
