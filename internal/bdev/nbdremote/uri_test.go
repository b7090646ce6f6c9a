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
		{"nbd://example.com/disk", URI{"tcp", "example.com:10809", "disk"}},
		{"nbd://example.com", URI{"tcp", "example.com:10809", ""}},
		{"nbd://example.com/", URI{"tcp", "example.com:10809", ""}},
		{"nbd://10.0.0.1:10810/a%20b", URI{"tcp", "10.0.0.1:10810", "a b"}},
		{"nbd://[::1]:7000//abs", URI{"tcp", "[::1]:7000", "/abs"}},
		{"nbd+unix:///disk?socket=/run/nbd.sock", URI{"unix", "/run/nbd.sock", "disk"}},
		{"nbd+unix://?socket=rel.sock", URI{"unix", "rel.sock", ""}},
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
	}
	for _, tc := range bad {
		_, err := ParseURI(tc.in)
		if !errors.Is(err, ErrBadURI) || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("ParseURI(%q) = %v, want ErrBadURI saying %q", tc.in, err, tc.says)
		}
	}
	for _, s := range []string{"nbds://h/disk", "nbds+unix:///d?socket=/s"} {
		_, err := ParseURI(s)
		if !errors.Is(err, ErrTLSNotSupported) || !errors.Is(err, bdev.ErrNotSupported) {
			t.Errorf("ParseURI(%q) = %v, want ErrTLSNotSupported", s, err)
		}
	}
}

func FuzzParseURI(f *testing.F) {
	for _, s := range []string{"nbd://h/d", "nbd+unix:///d?socket=/s", "nbds://h", "nbd://[::1]:1//x", "nbd://h:/", "%"} {
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
		again, err := ParseURI(u.String())
		if err != nil || again != u {
			t.Fatalf("ParseURI(%q) = %+v, but its String %q parses as %+v, %v", s, u, u.String(), again, err)
		}
	})
}
