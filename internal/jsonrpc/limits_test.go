package jsonrpc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"
)

// bigEcho is an echo request whose params carry a string of n bytes.
func bigEcho(id, n int) string {
	return fmt.Sprintf(`{"jsonrpc":"2.0","method":"echo","id":%d,"params":{"pad":"%s"}}`, id, strings.Repeat("x", n))
}

// waitFor polls cond for up to 5 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func TestOversizeRequestAnsweredShortly(t *testing.T) {
	ts := newTestServer(t, Options{})
	other := dialRaw(t, ts.path)
	if r := other.call(1, "sum", `{"a":1}`); r.Error != nil {
		t.Fatal(r.Error)
	}

	c := dialRaw(t, ts.path)
	// 6 MiB, more than DefaultMaxRequestBytes; the server stops reading
	// at 4 MiB, so write from another goroutine.
	sent := make(chan error, 1)
	go func() { _, err := c.Write([]byte(bigEcho(7, 6<<20))); sent <- err }()
	line := c.line()
	if len(line) > 1024 {
		t.Fatalf("reply to an oversize request is %d bytes: %.200s", len(line), line)
	}
	var r reply
	if err := json.Unmarshal(line, &r); err != nil {
		t.Fatal(err)
	}
	wantError(t, r, CodeParseError, MsgParseError)
	if string(r.ID) != "null" || !strings.Contains(r.Error.Data, fmt.Sprintf("request exceeds %d bytes", DefaultMaxRequestBytes)) {
		t.Fatalf("reply %s", line)
	}
	c.closed()
	<-sent // a write error (EPIPE) is expected: the server closed

	// The other connection, open all along, and a new one are served.
	if r := other.call(2, "sum", `{"a":2,"b":3}`); string(r.Result) != "5" {
		t.Fatalf("after the oversize request: %+v", r)
	}
	if r := dialRaw(t, ts.path).call(3, "sum", `{"a":1}`); r.Error != nil {
		t.Fatal(r.Error)
	}
	if n := len(ts.largeSlots); n != 0 {
		t.Fatalf("%d large-request slots still held", n)
	}
}

// holdLargeSlot connects and sends all but the end of a 100 KiB request,
// then waits until it holds one of ts's large-request slots (the test's
// server has one).
func holdLargeSlot(t *testing.T, ts *testServer) *rawConn {
	t.Helper()
	c := dialRaw(t, ts.path)
	req := bigEcho(1, 100<<10)
	c.send(req[:len(req)-10])
	waitFor(t, "A to take the slot", func() bool { return len(ts.largeSlots) == 1 })
	return c
}

func TestLargeRequestsWaitForASlot(t *testing.T) {
	const timeout = 1500 * time.Millisecond
	ts := newTestServer(t, Options{MaxLargeRequests: 1, LargeRequestTimeout: timeout})

	// A starts a large request and stalls: it holds the only slot.
	a := holdLargeSlot(t, ts)

	// B's complete large request waits; C's small one does not.
	b := dialRaw(t, ts.path)
	b.send(bigEcho(2, 100<<10))
	c := dialRaw(t, ts.path)
	if r := c.call(3, "sum", `{"a":1}`); r.Error != nil {
		t.Fatal(r.Error)
	}
	b.noReply(timeout / 4)

	// A runs out of time: answered, closed, and B goes ahead.
	r := a.reply()
	wantError(t, r, CodeParseError, MsgParseError)
	if !strings.Contains(r.Error.Data, "not complete within "+timeout.String()) {
		t.Fatalf("data %q", r.Error.Data)
	}
	a.closed()
	if r := b.reply(); r.Error != nil || len(r.Result) < 100<<10 || string(r.ID) != "2" {
		t.Fatalf("B's reply: %+v", r.Error)
	}
	waitFor(t, "the slot to be released", func() bool { return len(ts.largeSlots) == 0 })
	// B's connection still serves, without a deadline left behind.
	time.Sleep(timeout)
	if r := b.call(4, "sum", `{"a":4}`); string(r.Result) != "4" {
		t.Fatalf("B after its large request: %+v", r)
	}
}

func TestPipelinedAfterLargeRequest(t *testing.T) {
	ts := newTestServer(t, Options{MaxLargeRequests: 1})
	c := dialRaw(t, ts.path)
	// Large, small, large, small in one write: the reader hands what the
	// first decoder read ahead to the next one, in order.
	stream := bigEcho(1, 200<<10) + `{"method":"sum","id":2,"params":{"a":2}}` +
		bigEcho(3, 300<<10) + `{"method":"sum","id":4,"params":{"a":4}}`
	go c.Write([]byte(stream))
	for _, want := range []struct {
		id   string
		size int
	}{{"1", 200 << 10}, {"2", 1}, {"3", 300 << 10}, {"4", 1}} {
		r := c.reply()
		if r.Error != nil || string(r.ID) != want.id || len(r.Result) < want.size {
			t.Fatalf("reply %s: %+v (%d bytes)", want.id, r.Error, len(r.Result))
		}
	}
	waitFor(t, "the slot to be released", func() bool { return len(ts.largeSlots) == 0 })
}

func TestLongIDRefused(t *testing.T) {
	ts := newTestServer(t, Options{})
	c := dialRaw(t, ts.path)
	id := `"` + strings.Repeat("i", maxIDBytes) + `"`
	c.send(`{"jsonrpc":"2.0","method":"sum","id":` + id + `,"params":{"a":1}}`)
	if r := c.reply(); string(r.ID) != id || string(r.Result) != "1" {
		t.Fatalf("%d-byte id: %+v", maxIDBytes, r)
	}
	for _, long := range []string{`"` + strings.Repeat("i", 1<<20) + `"`, strings.Repeat("9", maxIDBytes+1)} {
		c.send(`{"jsonrpc":"2.0","method":"sum","id":` + long + `,"params":{"a":1}}`)
		line := c.line()
		var r reply
		json.Unmarshal(line, &r)
		wantError(t, r, CodeInvalidRequest, MsgInvalidRequest)
		if string(r.ID) != "null" || len(line) > 256 || !strings.Contains(r.Error.Data, "longer than 128") {
			t.Fatalf("reply to a %d-byte id: %.300s", len(long), line)
		}
	}
}

func TestBatchCap(t *testing.T) {
	ts := newTestServer(t, Options{})
	c := dialRaw(t, ts.path)
	batch := func(n int) string {
		elems := make([]string, n)
		for i := range elems {
			elems[i] = fmt.Sprintf(`{"method":"sum","id":%d,"params":{"a":%d}}`, i, i)
		}
		return "[" + strings.Join(elems, ",") + "]"
	}
	c.send(batch(maxBatch))
	var replies []reply
	if err := json.Unmarshal(c.line(), &replies); err != nil || len(replies) != maxBatch {
		t.Fatalf("batch of %d: %d replies, %v", maxBatch, len(replies), err)
	}
	c.send(batch(maxBatch + 1))
	r := c.reply()
	wantError(t, r, CodeInvalidRequest, MsgInvalidRequest)
	if !strings.Contains(r.Error.Data, "batch of 129 requests") {
		t.Fatalf("data %q", r.Error.Data)
	}
}

// TestErrorsQuoteExcerpts sends a megabyte of input into every error path
// that quotes what it got, and checks that no reply carries more than an
// excerpt of it.
func TestErrorsQuoteExcerpts(t *testing.T) {
	ts := newTestServer(t, Options{})
	big := strings.Repeat("A", 1<<20)
	ts.Register("fail_long_plain", func(context.Context, json.RawMessage) (any, error) {
		return nil, errors.New("open " + big + ": no such file")
	})
	ts.Register("fail_long_data", func(context.Context, json.RawMessage) (any, error) {
		return nil, ErrnoError(19).WithData("no bdev named %q", big)
	})
	ts.Register("fail_long_message", func(context.Context, json.RawMessage) (any, error) {
		return nil, Errorf(CodeInternalError, "Could not delete %s", big)
	})
	ts.Register("panic_long", func(context.Context, json.RawMessage) (any, error) {
		panic(big)
	})
	type fields struct {
		N  uint32  `json:"n"`
		I  int8    `json:"i"`
		F  float32 `json:"f"`
		In struct {
			X int `json:"x"`
		} `json:"in"`
	}
	ts.Register("typed", func(_ context.Context, p json.RawMessage) (any, error) {
		var f fields
		return nil, DecodeParams(p, &f, nil)
	})
	digits := strings.Repeat("9", 1<<20)
	for name, req := range map[string]string{
		"unknown member":    `{"method":"echo","id":1,"` + big + `":0}`,
		"duplicate member":  `{"method":"echo","id":1,"` + big + `":0,"` + big + `":0}`,
		"unknown parameter": `{"method":"typed","id":1,"params":{"` + big + `":1}}`,
		"nested parameter":  `{"method":"typed","id":1,"params":{"in":{"` + big + `":1}}}`,
		"huge uint":         `{"method":"typed","id":1,"params":{"n":` + digits + `}}`,
		"huge int":          `{"method":"typed","id":1,"params":{"i":-` + digits + `}}`,
		"long fraction":     `{"method":"typed","id":1,"params":{"n":1.` + digits + `}}`,
		"huge float":        `{"method":"typed","id":1,"params":{"f":` + digits + `e999}}`,
		"plain error":       `{"method":"fail_long_plain","id":1}`,
		"long data":         `{"method":"fail_long_data","id":1}`,
		"long message":      `{"method":"fail_long_message","id":1}`,
		"panic":             `{"method":"panic_long","id":1}`,
		"long method":       `{"method":"` + big + `","id":1}`,
	} {
		t.Run(name, func(t *testing.T) {
			c := dialRaw(t, ts.path)
			c.send(req)
			line := c.line()
			if len(line) > 2048 {
				t.Fatalf("reply of %d bytes: %.300s", len(line), line)
			}
			var r reply
			if err := json.Unmarshal(line, &r); err != nil || r.Error == nil {
				t.Fatalf("not an error reply: %.300s", line)
			}
			if name != "long method" && !strings.Contains(string(line), "bytes") {
				t.Fatalf("reply does not say it cut: %s", line)
			}
		})
	}
	// In-process calls are bounded the same way.
	_, err := ts.Call(context.Background(), "fail_long_plain", nil)
	if err == nil || len(err.Error()) > 2048 || !strings.HasSuffix(err.Error(), ": no such file (code -32603)") {
		t.Fatalf("Call: %.300v", err)
	}
}

func TestShutdownWakesSlotWaiters(t *testing.T) {
	ts := newTestServer(t, Options{MaxLargeRequests: 1, LargeRequestTimeout: time.Minute})
	a := holdLargeSlot(t, ts)
	b := dialRaw(t, ts.path)
	b.send(bigEcho(2, 100<<10))
	time.Sleep(50 * time.Millisecond)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	if err := ts.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown with a stalled large request and a waiter: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Shutdown took %v", d)
	}
	for _, c := range []*rawConn{a, b} {
		c.SetReadDeadline(time.Now().Add(time.Second))
		var buf [1]byte
		if _, err := c.Read(buf[:]); err == nil {
			t.Fatal("connection still open after Shutdown")
		} else if ne := (net.Error)(nil); errors.As(err, &ne) && ne.Timeout() {
			t.Fatal("connection not closed by Shutdown")
		}
	}
}
