package nbd

import (
	"encoding/binary"
	"io"
	"net"
	"runtime"
	"testing"
	"time"

	"blockcache/internal/nbdproto"
)

// yieldScene sends the reply to a FLUSH (handle 7) with sendYielding on a
// goroutine of its own, as a handed-off request does, while others other
// handed-off requests are in flight, on one scheduler slot. Each time the
// test's goroutine runs again, look is called with what it sees: whether
// the sender is done, whether anybody is the writer, and how many replies
// are queued; look returns true to stop looking. The reply must then
// reach the client.
func yieldScene(t *testing.T, others int32, look func(done, writing bool, queued int) bool) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	srv, cli := tcpPair(t)
	c := newConn(mustNewServer(t, nil), srv)
	j := flushJob(t, c, 7)
	c.handedOff.Store(1 + others)

	done := make(chan struct{})
	go func() {
		c.sendYielding(j)
		close(done)
	}()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		runtime.Gosched()
		var finished bool
		select {
		case <-done:
			finished = true
		default:
		}
		c.out.Lock()
		writing, queued := c.out.writing, len(c.out.queue)
		c.out.Unlock()
		if look(finished, writing, queued) {
			break
		}
	}
	c.flush()
	readHandles(t, cli, 7)
	<-done
	c.inflight.Wait()
}

// flushJob returns an admitted FLUSH of c, executed, its reply laid out.
func flushJob(t *testing.T, c *conn, handle uint64) *job {
	t.Helper()
	if !c.hold(0) {
		t.Fatal("no slot for the request")
	}
	c.inflight.Add(1)
	j := c.srv.getJob()
	j.req = nbdproto.Request{Type: nbdproto.CmdFlush, Cookie: handle}
	c.prepareReply(j, nil)
	return j
}

// readHandles reads simple replies from nc and checks their handles.
func readHandles(t *testing.T, nc net.Conn, handles ...uint64) {
	t.Helper()
	nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	for _, want := range handles {
		var reply [nbdproto.SimpleReplyLen]byte
		if _, err := io.ReadFull(nc, reply[:]); err != nil {
			t.Fatalf("no reply to handle %d: %v", want, err)
		}
		if h := binary.BigEndian.Uint64(reply[8:16]); h != want {
			t.Fatalf("reply to handle %d, want %d", h, want)
		}
	}
}

// TestHandedOffReplyJoinsHeldReplies: the reply of a handed-off request
// joins the replies the reader holds back, to go out in their writev,
// rather than being written alone.
func TestHandedOffReplyJoinsHeldReplies(t *testing.T) {
	srv, cli := tcpPair(t)
	c := newConn(mustNewServer(t, nil), srv)
	c.send(flushJob(t, c, 1), true) // held back by the reader
	j := flushJob(t, c, 2)
	c.handedOff.Store(1)
	c.sendYielding(j)
	c.out.Lock()
	writing, queued := c.out.writing, len(c.out.queue)
	c.out.Unlock()
	if writing || queued != 2 {
		t.Fatalf("after the handed-off reply: writer %v, %d queued; want it queued with the held one", writing, queued)
	}
	c.flush()
	readHandles(t, cli, 1, 2)
	c.inflight.Wait()
}

// TestYieldOnlyWithOthersInFlight: the reply of the only handed-off
// request in flight is written at once, without a yield that has nothing
// to batch.
func TestYieldOnlyWithOthersInFlight(t *testing.T) {
	yieldScene(t, 0, func(done, _ bool, queued int) bool {
		// Writing, it is the writer with nothing queued; yielding, its
		// reply would be queued.
		if queued > 0 {
			t.Fatal("the only handed-off reply was queued to wait for a yield")
		}
		return done
	})
}

// TestYieldHoldsNoWriterRole: a reply waiting for its yield is queued
// without its goroutine being the writer, so that replies completing
// meanwhile are written at once rather than queued behind a goroutine
// that is not running; a flush then writes it too.
func TestYieldHoldsNoWriterRole(t *testing.T) {
	yieldScene(t, 1, func(done, writing bool, queued int) bool {
		if writing {
			t.Fatal("a handed-off reply's goroutine is the writer while it yields")
		}
		if done {
			t.Fatal("the reply was written with another handed-off request in flight, without a yield")
		}
		return queued == 1
	})
}
