package nbdremote

import (
	"errors"
	"strings"
	"testing"

	"blockcache/internal/bdev"
)

func TestParseURI(t *testing.T) {
	good := []struct {
		in   string
		want URI
	}{
		{"nbd://example.com/disk", URI{Network: "tcp", Address: "example.com:10809", Export: "disk"}},
		{"nbd://example.com", URI{Network: "tcp", Address: "example.com:10809", Export: ""}},
		{"nbd://example.com/", URI{Network: "tcp", Address: "example.com:10809", Export: ""}},
		{"nbd://10.0.0.1:10810/a%20b", URI{Network: "tcp", Address: "10.0.0.1:10810", Export: "a b"}},
		{"nbd://[::1]:7000//abs", URI{Network: "tcp", Address: "[::1]:7000", Export: "/abs"}},
		{"nbd+unix:///disk?socket=/run/nbd.sock", URI{Network: "unix", Address: "/run/nbd.sock", Export: "disk"}},
		{"nbd+unix://?socket=rel.sock", URI{Network: "unix", Address: "rel.sock", Export: ""}},
		{"nbds://example.com/disk", URI{Network: "tcp", Address: "example.com:10809", Export: "disk", TLS: TLSParams{Enabled: true}}},
		{"nbds://10.0.0.1:7000/d?tls-certificates=/etc/pki/nbd&tls-verify-peer=false", URI{Network: "tcp", Address: "10.0.0.1:7000", Export: "d",
			TLS: TLSParams{Enabled: true, Certificates: "/etc/pki/nbd", NoVerifyPeer: true}}},
		{"nbds://h/d?tls-verify-peer=TRUE&tls-hostname=store.example", URI{Network: "tcp", Address: "h:10809", Export: "d",
			TLS: TLSParams{Enabled: true, Hostname: "store.example"}}},
		{"nbds+unix:///d?socket=/run/s.sock&tls-certificates=pki%20dir&tls-hostname=store", URI{Network: "unix", Address: "/run/s.sock", Export: "d",
			TLS: TLSParams{Enabled: true, Certificates: "pki dir", Hostname: "store"}}},
		{"nbds+unix:///?tls-verify-peer=0&socket=s", URI{Network: "unix", Address: "s", Export: "",
			TLS: TLSParams{Enabled: true, NoVerifyPeer: true}}},
	}
	for _, tc := range good {
		got, err := ParseURI(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseURI(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
			continue
		}
		again, err := ParseURI(got.String())
		if err != nil || again != got {
			t.Errorf("ParseURI(%q.String() = %q) = %+v, %v", tc.in, got.String(), again, err)
		}
	}
	bad := []struct{ in, says string }{
		{"", "empty"},
		{"example.com/disk", "no scheme"},
		{"http://example.com/disk", `scheme "http"`},
		{"nbd:disk", "authority"},
		{"nbd:///disk", "no host"},
		{"nbd://h:0/disk", `port "0"`},
		{"nbd://h:99999/disk", `port "99999"`},
		{"nbd://h:/disk", "empty port"},
		{"nbd://user@h/disk", "user information"},
		{"nbd://h/disk#frag", "fragments"},
		{"nbd://h/disk?tls=on", `query parameter "tls"`},
		{"nbd+unix://host/disk?socket=/s", "no host"},
		{"nbd+unix:///disk", "socket=PATH"},
		{"nbd+unix:///disk?socket=", "socket=PATH"},
		{"nbd+unix:///disk?socket=/a&socket=/b", "socket=PATH"},
		{"nbd+unix:///disk?socket=/a&x=1", `query parameter "x"`},
		{"nbd://h/%zz", "invalid URL escape"},
		{"nbd+vsock:///disk", `scheme "nbd+vsock"`},
		{"nbds+vsock:///disk", `scheme "nbds+vsock"`},
		{"nbd://::1/disk", "in brackets"},
		{"nbd://h/d?tls-certificates=/p", "tls-certificates is only used with TLS"},
		{"nbd+unix:///d?socket=/s&tls-verify-peer=false", "tls-verify-peer is only used with TLS"},
		{"nbd://h/d?tls-psk-file=/k", "tls-psk-file is only used with TLS"},
		{"nbds://h/d?tls-certificates=", "non-empty tls-certificates"},
		{"nbds://h/d?tls-certificates=/a&tls-certificates=/b", "exactly one non-empty tls-certificates"},
		{"nbds://h/d?tls-verify-peer=maybe", `tls-verify-peer="maybe"`},
		{"nbds://h/d?tls-hostname=", "non-empty tls-hostname"},
		{"nbds://h/d?tls-priority=NORMAL", `query parameter "tls-priority"`},
		{"nbds://h/d?socket=/s", `query parameter "socket"`},
		{"nbds:///d", "no host: want nbds://"},
		{"nbds+unix://h/d?socket=/s", "nbds+unix takes no host"},
		{"nbds+unix:///d?tls-certificates=/p", "nbds+unix needs exactly one"},
	}
	for _, tc := range bad {
		_, err := ParseURI(tc.in)
		if !errors.Is(err, ErrBadURI) || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("ParseURI(%q) = %v, want ErrBadURI saying %q", tc.in, err, tc.says)
		}
	}
	for _, s := range []string{"nbds://alice@h/disk", "nbds+unix:///d?socket=/s&tls-psk-file=/keys"} {
		_, err := ParseURI(s)
		if !errors.Is(err, ErrTLSNotSupported) || !errors.Is(err, bdev.ErrNotSupported) {
			t.Errorf("ParseURI(%q) = %v, want ErrTLSNotSupported", s, err)
		}
	}
}

// TestURIString: the canonical form keeps every TLS parameter, and paths
// in the query stay readable.
func TestURIString(t *testing.T) {
	for in, want := range map[string]string{
		"nbds://h:7000/d?tls-verify-peer=no&tls-certificates=/etc/pki/x": "nbds://h:7000/d?tls-certificates=/etc/pki/x&tls-verify-peer=false",
		"nbds+unix:///d?tls-hostname=store&socket=/run/a+b.sock":         "nbds+unix:///d?socket=/run/a+b.sock&tls-hostname=store",
		"nbds://h/d?tls-verify-peer=true":                                "nbds://h:10809/d",
		"nbd+unix:///d?socket=/run/nbd.sock":                             "nbd+unix:///d?socket=/run/nbd.sock",
	} {
		u, err := ParseURI(in)
		if err != nil {
			t.Fatalf("ParseURI(%q): %v", in, err)
		}
		if got := u.String(); got != want {
			t.Errorf("ParseURI(%q).String() = %q, want %q", in, got, want)
		}
	}
}

func FuzzParseURI(f *testing.F) {
	for _, s := range []string{"nbd://h/d", "nbd+unix:///d?socket=/s", "nbds://h", "nbd://[::1]:1//x", "nbd://h:/", "%",
		"nbds://h/d?tls-certificates=/p&tls-verify-peer=false&tls-hostname=x", "nbds+unix:///d?socket=/s&tls-hostname=h",
		"nbds://u@h/?tls-psk-file=/k", "nbd://h/?tls-certificates=/p"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := ParseURI(s)
		if err != nil {
			if !errors.Is(err, ErrBadURI) && !errors.Is(err, ErrTLSNotSupported) {
				t.Fatalf("ParseURI(%q) = %v: not a URI error", s, err)
			}
			return
		}
		if u.Network != "tcp" && u.Network != "unix" || u.Address == "" {
			t.Fatalf("ParseURI(%q) = %+v", s, u)
		}
		if tls := strings.HasPrefix(strings.ToLower(s), "nbds"); u.TLS.Enabled != tls || !tls && u.TLS != (TLSParams{}) {
			t.Fatalf("ParseURI(%q) = %+v", s, u)
		}
		again, err := ParseURI(u.String())
		if err != nil || again != u {
			t.Fatalf("ParseURI(%q) = %+v, but its String %q parses as %+v, %v", s, u, u.String(), again, err)
		}
	})
}
