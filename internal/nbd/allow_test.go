package nbd

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"slices"
	"testing"
	"time"

	"blockcache/internal/bdev/bdevtest"
	"blockcache/internal/nbd/nbdclient"
)

func TestParseAllowList(t *testing.T) {
	got, err := ParseAllowList([]string{"127.0.0.2", "10.1.2.3/8, ::1", "::ffff:192.0.2.1"})
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{
		netip.MustParsePrefix("127.0.0.2/32"), netip.MustParsePrefix("10.0.0.0/8"),
		netip.MustParsePrefix("::1/128"), netip.MustParsePrefix("192.0.2.1/32"),
	}
	if !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for _, bad := range []string{"localhost", "10.0.0.0/33", "1.2.3.4.5"} {
		if _, err := ParseAllowList([]string{bad}); !errors.Is(err, ErrInvalidOptions) {
			t.Errorf("%q: %v, want ErrInvalidOptions", bad, err)
		}
	}
}

// dialFrom connects to addr from the local address from and reports
// whether the server greets it (true) or closes it (false).
func dialFrom(t *testing.T, network, from, addr string) bool {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second}
	if from != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(from)}
	}
	nc, err := d.Dial(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(5 * time.Second))
	_, err = nbdclient.Handshake(nc, stdFlags)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatal("neither greeted nor closed")
	}
	return err == nil
}

func TestAllowListTCP(t *testing.T) {
	addrs, err := ParseAllowList([]string{"127.0.0.2"})
	if err != nil {
		t.Fatal(err)
	}
	ts := startServerOpts(t, Options{Allow: &AllowList{Addrs: addrs}}, nil, Export{Name: "disk", Device: bdevtest.NewMalloc(t, "m0", 64)})
	if !dialFrom(t, "tcp", "127.0.0.2", ts.tcpAddr) {
		t.Fatal("127.0.0.2 refused")
	}
	for range 3 {
		if dialFrom(t, "tcp", "127.0.0.3", ts.tcpAddr) {
			t.Fatal("127.0.0.3 admitted")
		}
	}
	// Logged once, not three times (the refusal log is rate-limited); the
	// Unix socket is not governed by address ranges.
	if got := ts.log.find("nbd connection refused", "127.0.0.3", "not in the allow-list"); len(got) != 1 {
		t.Fatalf("refusals logged: %q", got)
	}
	if !dialFrom(t, "unix", "", ts.unixPath) {
		t.Fatal("Unix socket client refused by an address allow-list")
	}
}

func TestAllowListUnixPeerCred(t *testing.T) {
	uid, gid := uint32(os.Getuid()), uint32(os.Getgid())
	for _, tc := range []struct {
		al AllowList
		ok bool
	}{
		{AllowList{UIDs: []uint32{uid}}, true},
		{AllowList{GIDs: []uint32{gid}}, true},
		{AllowList{UIDs: []uint32{uid + 1}}, false},
		{AllowList{UIDs: []uint32{uid + 1}, GIDs: []uint32{gid + 1}}, false},
	} {
		ts := startServerOpts(t, Options{Allow: &tc.al}, nil, Export{Name: "disk", Device: bdevtest.NewMalloc(t, "m0", 64)})
		if got := dialFrom(t, "unix", "", ts.unixPath); got != tc.ok {
			t.Errorf("%+v: admitted %v, want %v", tc.al, got, tc.ok)
		}
		// TCP clients are not governed by uids.
		if !dialFrom(t, "tcp", "", ts.tcpAddr) {
			t.Errorf("%+v: TCP client refused", tc.al)
		}
	}
}

func FuzzParseAllowList(f *testing.F) {
	for _, s := range []string{"127.0.0.1", "10.0.0.0/8,::1", "::ffff:1.2.3.4/120", ",,", "1.2.3.4/40"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ps, err := ParseAllowList([]string{s})
		if err != nil {
			if !errors.Is(err, ErrInvalidOptions) {
				t.Fatalf("%q: error %v does not wrap ErrInvalidOptions", s, err)
			}
			return
		}
		for _, p := range ps {
			if !p.IsValid() || p != p.Masked() {
				t.Fatalf("%q: range %v is not valid and masked", s, p)
			}
		}
	})
}
