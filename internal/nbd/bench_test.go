package nbd

import (
	"bufio"
	"encoding/binary"
	"io"
	"testing"

	"blockcache/internal/nbd/nbdclient"
)

// benchIO drives one connection with a pipelined client that allocates
// nothing per request, so allocs/op is (almost all) the server's.
func benchIO(b *testing.B, cmd command, size int, depth int) {
	dev := newMalloc(b, "bench", 131072) // 64 MiB
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
	go func() {
		w := bufio.NewWriterSize(nc, 256<<10)
		req := make([]byte, requestHeaderLen)
		payload := make([]byte, size)
		for i := range b.N {
			window <- struct{}{}
			binary.BigEndian.PutUint32(req[0:4], magicRequest)
			binary.BigEndian.PutUint16(req[4:6], 0)
			binary.BigEndian.PutUint16(req[6:8], uint16(cmd))
			binary.BigEndian.PutUint64(req[8:16], uint64(i))
			binary.BigEndian.PutUint64(req[16:24], uint64(i)%blocks*uint64(size))
			binary.BigEndian.PutUint32(req[24:28], uint32(size))
			w.Write(req)
			if cmd == cmdWrite {
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
	var hdr [simpleReplyLen]byte
	for range b.N {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			b.Fatal(err)
		}
		if e := binary.BigEndian.Uint32(hdr[4:8]); e != 0 {
			b.Fatalf("errno %d", e)
		}
		if cmd == cmdRead {
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
}

func BenchmarkRead4K(b *testing.B)    { benchIO(b, cmdRead, 4096, 32) }
func BenchmarkWrite4K(b *testing.B)   { benchIO(b, cmdWrite, 4096, 32) }
func BenchmarkRead128K(b *testing.B)  { benchIO(b, cmdRead, 128<<10, 16) }
func BenchmarkWrite128K(b *testing.B) { benchIO(b, cmdWrite, 128<<10, 16) }
