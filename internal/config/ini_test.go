package config

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseINI(t *testing.T) {
	calls, err := ParseINI("test.ini", strings.NewReader(`
# a comment
[Global]
  ReactorMask 0x1
[Malloc]
  NumberOfLuns 2
  LunSizeInMB 64   # per LUN
[AIO]
  AIO /tmp/disk.img AIO0 4096
  AIO /tmp/other AIO1
[OCF]
  OCF Cache1 wb 8 Malloc0 AIO0
`))
	if err != nil {
		t.Fatal(err)
	}
	want := []Call{
		{"bdev_malloc_create", map[string]any{"name": "Malloc0", "num_blocks": uint64(131072), "block_size": uint64(512)}},
		{"bdev_malloc_create", map[string]any{"name": "Malloc1", "num_blocks": uint64(131072), "block_size": uint64(512)}},
		{"bdev_aio_create", map[string]any{"filename": "/tmp/disk.img", "name": "AIO0", "block_size": uint64(4096)}},
		{"bdev_aio_create", map[string]any{"filename": "/tmp/other", "name": "AIO1"}},
		{"bdev_ocf_create", map[string]any{"name": "Cache1", "mode": "wb", "cache_line_size": uint64(8), "cache_bdev_name": "Malloc0", "core_bdev_name": "AIO0"}},
	}
	if !reflect.DeepEqual(calls, want) {
		t.Fatalf("calls:\n%v\nwant:\n%v", calls, want)
	}
}

func TestParseINIErrorsNameTheLine(t *testing.T) {
	for _, tc := range []struct{ ini, want string }{
		{"[OCF]\n  OCF C1 wt 4 Malloc0\n", "x.ini:2: [OCF] want"},
		{"[OCF]\n\n  OCF C1 wt four M0 M1\n", "x.ini:3: [OCF] C1: cache line size \"four\""},
		{"[Malloc]\n  NumberOfLuns x\n  LunSizeInMB 8\n", "x.ini:3: [Malloc] NumberOfLuns \"x\""},
		{"[Malloc]\n  Colour blue\n", "x.ini:2: [Malloc] unknown key \"Colour\""},
		{"[AIO]\n  AIO /f\n", "x.ini:2: [AIO] want"},
		{"[AIO]\n  AIO /f A0 1000\n", "x.ini:2: [AIO] block size \"1000\""},
		{"OCF C1 wt 4 a b\n", "x.ini:1: \"OCF C1 wt 4 a b\" outside any section"},
		{"[OCF\n", "x.ini:1: section header"},
	} {
		_, err := ParseINI("x.ini", strings.NewReader(tc.ini))
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want prefix %q", tc.ini, err, tc.want)
		}
	}
}
