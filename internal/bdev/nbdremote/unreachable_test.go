package nbdremote

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/uuid"

	"blockcache/internal/nbdproto"
)

// TestUnreachable: which of Open's real failures may go away by trying
// again (the server is down, or its TLS session cannot be set up) and
// which need other parameters or another server configuration.
func TestUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedPort := ln.Addr().String()
	ln.Close()
	hangup := newFakeServer(t, 1<<20)
	hangup.setRefuse(true)
	served := newFakeServer(t, 1<<20)
	ca, other := newTestCA(t), newTestCA(t)
	tlsFront := newTLSFront(t, "tcp", newFakeServer(t, 1<<20), ca, nil)
	noTLS := newTLSFront(t, "tcp", newFakeServer(t, 1<<20), ca, nil)
	noTLS.refuse = nbdproto.RepErrPolicy
	bad := fastOptions()
	bad.ReconnectDelay = 0

	cases := []struct {
		what  string
		uri   string
		opts  *Options
		retry bool
	}{
		{"connection refused", "nbd://" + closedPort + "/", nil, true},
		{"no Unix socket", "nbd+unix:///?socket=" + filepath.Join(t.TempDir(), "none.sock"), nil, true},
		{"hung up at once", "nbd+unix:///?socket=" + hangup.addr, nil, true},
		{"TLS: unknown authority", tlsFront.uri("tls-certificates=" + clientDir(t, other, nil)), nil, true},
		{"export refused", "nbd+unix:///nosuch?socket=" + served.addr, nil, false},
		{"STARTTLS refused", noTLS.uri("tls-certificates=" + clientDir(t, ca, nil)), nil, false},
		{"no CA file", tlsFront.uri("tls-certificates=" + clientDir(t, nil, nil)), nil, false},
		{"options", "nbd+unix:///?socket=" + served.addr, &bad, false},
	}
	for _, tc := range cases {
		u, err := ParseURI(tc.uri)
		if err != nil {
			t.Fatalf("%s: %v", tc.what, err)
		}
		o := fastOptions()
		if tc.opts != nil {
			o = *tc.opts
		}
		d, err := Open("u0", u, uuid.Nil, o)
		if err == nil {
			d.Close()
			t.Errorf("%s: Open succeeded", tc.what)
			continue
		}
		if got := Unreachable(err); got != tc.retry {
			t.Errorf("%s: Unreachable(%v) = %v, want %v", tc.what, err, got, tc.retry)
		}
	}
}

// TestOpenContextCancelled: cancelling ctx ends an Open waiting for a
// server that accepted the connection but never greets, long before the
// IO timeout, and the error is not Unreachable.
func TestOpenContextCancelled(t *testing.T) {
	ln, err := net.Listen("unix", filepath.Join(t.TempDir(), "silent.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	u, err := ParseURI("nbd+unix:///?socket=" + ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	time.AfterFunc(100*time.Millisecond, cancel)
	start := time.Now()
	o := DefaultOptions() // 30 s IO timeout
	d, err := OpenContext(ctx, "u0", u, uuid.Nil, o)
	if err == nil {
		d.Close()
		t.Fatal("Open of a silent server succeeded")
	}
	if took := time.Since(start); took > 5*time.Second || !errors.Is(err, context.Canceled) || Unreachable(err) {
		t.Fatalf("OpenContext cancelled after 100 ms returned after %v with %v; want context.Canceled, not Unreachable, at once", took, err)
	}
}
