package delay_test

import (
	"testing"
	"time"

	"blockcache/internal/bdev/bdevtest"
	"blockcache/internal/bdev/delay"
	"blockcache/internal/poller"
)

// TestPollersFollowOpenDevices: each device on its own timer adds one
// check to Config.Pollers in New and takes its own out in Close, once
// however often it is closed; a device with a Sleep of its own adds none.
func TestPollersFollowOpenDevices(t *testing.T) {
	m := bdevtest.NewMalloc(t, "Malloc0", 64)
	var set poller.Set
	open := func(name string, sleep func(d time.Duration)) *delay.Device {
		t.Helper()
		d, err := delay.New(m, delay.Config{Name: name, Latencies: testLatencies, Sleep: sleep, Pollers: &set})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Close() })
		return d
	}
	wantLen := func(when string, want int) {
		t.Helper()
		if got := set.Len(); got != want {
			t.Fatalf("%s: %d checks registered, want %d", when, got, want)
		}
	}

	d0 := open("Delay0", nil)
	wantLen("one device open", 1)
	d1 := open("Delay1", nil)
	wantLen("two devices open", 2)
	faked := open("Delay2", (&sleeps{}).sleep)
	wantLen("with a device sleeping on a fake", 2)

	if err := d0.Close(); err != nil {
		t.Fatal(err)
	}
	wantLen("one of two closed", 1)
	if err := d0.Close(); err != nil {
		t.Fatal(err)
	}
	wantLen("the same device closed again", 1)
	if err := faked.Close(); err != nil {
		t.Fatal(err)
	}
	wantLen("the device on a fake closed", 1)

	if err := d1.Close(); err != nil {
		t.Fatal(err)
	}
	wantLen("both closed", 0)
}
