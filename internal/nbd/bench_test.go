package nbd

import (
	"bufio"
	"encoding/binary"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"blockcache/internal/bdev"
	"blockcache/internal/bdev/bdevtest"
	"blockcache/internal/nbd/nbdclient"
	"blockcache/internal/nbdproto"
)

// benchIO drives one connection with a pipelined client that allocates
// nothing per request, so allocs/op is (almost all) the server's.
func benchIO(b *testing.B, cmd nbdproto.Command, size int, depth int) {
	benchIODev(b, bdevtest.NewMalloc(b, "bench", 131072), cmd, size, depth) // 64 MiB
}

// benchIODev is benchIO on dev. Besides ns/op and allocs/op it reports the
// process's CPU time (cpu-ns/op: server and client, user and system) and
// its write syscalls (syscw/op: the client's requests and the server's
// replies) per request, which say more than ns/op while other processes
// share the CPUs.
func benchIODev(b *testing.B, dev bdev.Device, cmd nbdproto.Command, size int, depth int) {
	ts := startServer(b, Export{Name: "disk", Device: dev})
	n := ts.handshake(b, stdFlags)
	if _, err := n.Option(nbdclient.OptGo, nbdclient.InfoData("disk")); err != nil {
		b.Fatal(err)
	}
	nc := n.Conn()
	blocks := uint64(dev.Info().SizeBytes()) / uint64(size)

	window := make(chan struct{}, depth)
	sendErr := make(chan error, 1)
	b.SetBytes(int64(size))
	b.ReportAllocs()
	b.ResetTimer()
	cpu0, w0 := processCPU(b), writeSyscalls(b)
	go func() {
		w := bufio.NewWriterSize(nc, 256<<10)
		req := make([]byte, nbdproto.RequestLen)
		payload := make([]byte, size)
		for i := range b.N {
			window <- struct{}{}
			binary.BigEndian.PutUint32(req[0:4], nbdproto.MagicRequest)
			binary.BigEndian.PutUint16(req[4:6], 0)
			binary.BigEndian.PutUint16(req[6:8], uint16(cmd))
			binary.BigEndian.PutUint64(req[8:16], uint64(i))
			binary.BigEndian.PutUint64(req[16:24], uint64(i)%blocks*uint64(size))
			binary.BigEndian.PutUint32(req[24:28], uint32(size))
			w.Write(req)
			if cmd == nbdproto.CmdWrite {
				w.Write(payload)
			}
			if len(window) == depth || i == b.N-1 {
				if err := w.Flush(); err != nil {
					sendErr <- err
					return
				}
			}
		}
		sendErr <- nil
	}()
	r := bufio.NewReaderSize(nc, 256<<10)
	var hdr [nbdproto.SimpleReplyLen]byte
	for range b.N {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			b.Fatal(err)
		}
		if e := binary.BigEndian.Uint32(hdr[4:8]); e != 0 {
			b.Fatalf("errno %d", e)
		}
		if cmd == nbdproto.CmdRead {
			if _, err := r.Discard(size); err != nil {
				b.Fatal(err)
			}
		}
		<-window
	}
	b.StopTimer()
	if err := <-sendErr; err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(processCPU(b)-cpu0)/float64(b.N), "cpu-ns/op")
	b.ReportMetric(float64(writeSyscalls(b)-w0)/float64(b.N), "syscw/op")
}

// processCPU is the CPU time the process has used, user and system.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// writeSyscalls is the process's count of write system calls (write,
// writev, ...) from /proc/self/io.
func writeSyscalls(b *testing.B) int64 {
	data, err := os.ReadFile("/proc/self/io")
	if err != nil {
		b.Fatal(err)
	}
	for line := range strings.Lines(string(data)) {
		if v, ok := strings.CutPrefix(line, "syscw: "); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				b.Fatal(err)
			}
			return n
		}
	}
	b.Fatal("/proc/self/io has no syscw line")
	return 0
}

// BenchmarkReadSlowMiss4K reads 4 KiB blocks at QD16 from a device that
// serves nine blocks in ten at once (hits, executed inline) and hands the
// tenth off (a miss), which then waits 0 or 1 ms: the slow-core
// benchmark's mix, in-process, and its 0 ms reference. The difference in
// cpu-ns/op is what waiting costs the server beyond the handoff.
func BenchmarkReadSlowMiss4K(b *testing.B) {
	for _, wait := range []time.Duration{0, time.Millisecond} {
		b.Run("wait="+wait.String(), func(b *testing.B) {
			benchIODev(b, slowMissDevice{bdevtest.NewMalloc(b, "bench", 131072), 10, wait}, nbdproto.CmdRead, 4096, 16)
		})
	}
}

// BenchmarkReadHandedOff4K reads 4 KiB blocks one at a time (QD1) from a
// device that serves none without waiting, so every request is handed off
// and its goroutine writes the reply alone: ns/op is the round trip of a
// handed-off request, which the yield before writing (sendYielding) must
// not lengthen.
func BenchmarkReadHandedOff4K(b *testing.B) {
	benchIODev(b, slowMissDevice{bdevtest.NewMalloc(b, "bench", 131072), 1, 0}, nbdproto.CmdRead, 4096, 1)
}

// slowMissDevice serves a read at once (bdev.TryReader) unless its block
// number is a multiple of every; those wait for wait first.
type slowMissDevice struct {
	bdev.Device
	every int64
	wait  time.Duration
}

func (d slowMissDevice) miss(off int64) bool { return off/4096%d.every == 0 }

func (d slowMissDevice) TryReadAt(p []byte, off int64) (bool, error) {
	if d.miss(off) {
		return false, nil
	}
	return true, d.Device.ReadAt(p, off)
}

func (d slowMissDevice) ReadAt(p []byte, off int64) error {
	if d.miss(off) && d.wait > 0 {
		time.Sleep(d.wait)
	}
	return d.Device.ReadAt(p, off)
}

func BenchmarkRead4K(b *testing.B)    { benchIO(b, nbdproto.CmdRead, 4096, 32) }
func BenchmarkWrite4K(b *testing.B)   { benchIO(b, nbdproto.CmdWrite, 4096, 32) }
func BenchmarkRead128K(b *testing.B)  { benchIO(b, nbdproto.CmdRead, 128<<10, 16) }
func BenchmarkWrite128K(b *testing.B) { benchIO(b, nbdproto.CmdWrite, 128<<10, 16) }
