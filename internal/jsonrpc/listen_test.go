package jsonrpc

import (
	"errors"
	"io/fs"
	"net"
	"os"
	"testing"
)

func TestListenRefusesSecondServer(t *testing.T) {
	path := socketPath(t)
	l, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, err = Listen(path)
	var inUse *InUseError
	if !errors.As(err, &inUse) {
		t.Fatalf("second Listen = %v, want *InUseError", err)
	}
	if want := "another blockcache (or SPDK) is already listening on " + path; err.Error() != want {
		t.Fatalf("message %q, want %q", err.Error(), want)
	}
	// The first listener is untouched.
	go func() {
		c, err := l.Accept()
		if err == nil {
			c.Close()
		}
	}()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatalf("first listener broken: %v", err)
	}
	c.Close()
}

func TestListenRefusesLiveForeignServer(t *testing.T) {
	// A server that does not take the lock file, but answers on the path.
	path := socketPath(t)
	foreign, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer foreign.Close()
	if _, err := Listen(path); !errors.As(err, new(*InUseError)) {
		t.Fatalf("Listen over a live socket = %v, want *InUseError", err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("live socket removed: %v", err)
	}
}

func TestListenReusesStaleSocket(t *testing.T) {
	path := socketPath(t)
	// Leave a socket file behind, as a killed daemon does.
	dead, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	dead.(*net.UnixListener).SetUnlinkOnClose(false)
	dead.Close()
	if fi, err := os.Lstat(path); err != nil || fi.Mode()&fs.ModeSocket == 0 {
		t.Fatalf("stale socket not left behind: %v", err)
	}
	// A stale lock file from the dead daemon does not matter either: the
	// kernel dropped its flock.
	if err := os.WriteFile(path+".lock", nil, 0o600); err != nil {
		t.Fatal(err)
	}

	l, err := Listen(path)
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	s := NewServer(Options{InitialState: StateRuntime})
	go s.Serve(l)
	defer s.Close()
	c := dialRaw(t, path)
	c.send(`{"method":"x","id":1}`)
	wantError(t, c.reply(), CodeMethodNotFound, MsgMethodNotFound)

	s.Close()
	for _, p := range []string{path, path + ".lock"} {
		if _, err := os.Lstat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s left after Close: %v", p, err)
		}
	}
	// And the path can be listened on again.
	l2, err := Listen(path)
	if err != nil {
		t.Fatalf("Listen after Close: %v", err)
	}
	l2.Close()
}

func TestListenKeepsNonSocket(t *testing.T) {
	path := socketPath(t)
	if err := os.WriteFile(path, []byte("precious"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(path); err == nil {
		t.Fatal("Listen over a regular file succeeded")
	}
	if b, err := os.ReadFile(path); err != nil || string(b) != "precious" {
		t.Fatalf("regular file damaged: %q, %v", b, err)
	}
	// The lock was released: a retry fails for the same reason, not InUse.
	if _, err := Listen(path); err == nil || errors.As(err, new(*InUseError)) {
		t.Fatalf("retry = %v", err)
	}
}
