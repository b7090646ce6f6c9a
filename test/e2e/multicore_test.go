package e2e

import (
	"encoding/json"
	"testing"
	"time"
)

// SPDK's test/ocf/management/multicore.sh: two OCF vbdevs on the same
// missing core both wait (started false), the target shuts down cleanly;
// when the core appears the first created starts and the other waits on.
func TestTwoVbdevsWaitingForOneCore(t *testing.T) {
	d := StartDaemon(t, DaemonOpts{Bare: true})
	d.Call(t, "bdev_malloc_create", mallocParams("Malloc0", 32, 512))
	d.Call(t, "bdev_ocf_create", ocfParams("C1", "wt", "Malloc0", "NonExisting", 0))
	d.Call(t, "bdev_ocf_create", ocfParams("C2", "wt", "Malloc0", "NonExisting", 0))

	started := func() map[string]bool {
		var got []struct {
			Name    string `json:"name"`
			Started bool   `json:"started"`
		}
		if err := json.Unmarshal(d.Call(t, "bdev_ocf_get_bdevs", nil), &got); err != nil {
			t.Fatal(err)
		}
		out := map[string]bool{}
		for _, v := range got {
			out[v.Name] = v.Started
		}
		return out
	}
	if got := started(); len(got) != 2 || got["C1"] || got["C2"] {
		t.Fatalf("before the core exists: %v, want C1 and C2 both waiting", got)
	}
	d.Call(t, "bdev_malloc_create", mallocParams("NonExisting", 64, 512))
	if got := started(); !got["C1"] || got["C2"] {
		t.Fatalf("after the core appeared: %v, want C1 started and C2 waiting", got)
	}
	d.Call(t, "bdev_ocf_delete", map[string]any{"name": "C1"})
	if got := started(); len(got) != 1 || !got["C2"] {
		t.Fatalf("after C1 was deleted: %v, want C2 started", got)
	}
	d.Call(t, "spdk_kill_instance", map[string]any{"sig_name": "SIGTERM"})
	if code := d.Wait(t, 30*time.Second); code != 0 {
		t.Fatalf("shutdown exit code %d\n%s", code, d.Stderr())
	}
}
