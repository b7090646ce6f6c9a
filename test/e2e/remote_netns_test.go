package e2e

import (
	"fmt"
	"math/rand/v2"
	"os/exec"
	"strings"
	"testing"
	"time"

	"blockcache/internal/testutil"
)

// netns is a network namespace the test made, joined to the test's own by
// a veth pair with addresses private to the pair.
type netns struct {
	name       string
	hostIf     string
	hostAddr   string
	serverAddr string
}

// newNetns creates the namespace and the veth pair (root only; CI runs as
// root) and removes both at cleanup.
func newNetns(t *testing.T) *netns {
	t.Helper()
	testutil.RequireTool(t, "ip")
	id := rand.IntN(1 << 16)
	subnet := fmt.Sprintf("10.%d.%d", 200+id%50, id%250)
	n := &netns{name: fmt.Sprintf("bcnbd%d", id), hostIf: fmt.Sprintf("bcv%da", id),
		hostAddr: subnet + ".1", serverAddr: subnet + ".2"}
	peer := fmt.Sprintf("bcv%db", id)
	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	ip("netns", "add", n.name)
	t.Cleanup(func() {
		exec.Command("ip", "link", "del", n.hostIf).Run()
		exec.Command("ip", "netns", "del", n.name).Run()
	})
	ip("link", "add", n.hostIf, "type", "veth", "peer", "name", peer)
	ip("link", "set", peer, "netns", n.name)
	ip("addr", "add", n.hostAddr+"/24", "dev", n.hostIf)
	ip("link", "set", n.hostIf, "up")
	ip("netns", "exec", n.name, "ip", "addr", "add", n.serverAddr+"/24", "dev", peer)
	ip("netns", "exec", n.name, "ip", "link", "set", peer, "up")
	ip("netns", "exec", n.name, "ip", "link", "set", "lo", "up")
	return n
}

// link sets the test's end of the pair up or down.
func (n *netns) link(t *testing.T, up bool) {
	t.Helper()
	state := "down"
	if up {
		state = "up"
	}
	if out, err := exec.Command("ip", "link", "set", n.hostIf, state).CombinedOutput(); err != nil {
		t.Fatalf("ip link set %s %s: %v\n%s", n.hostIf, state, err, out)
	}
}

// TestRemoteCoreNetns: the core's server (nbdkit memory) runs in a network
// namespace behind a veth pair; a wt volume on it works across the link,
// and when the link goes down under a writer, the 1 s IO timeout drops
// the connection, the client reconnects once the link is back, and the
// data matches the model.
func TestRemoteCoreNetns(t *testing.T) {
	n := newNetns(t)
	addr := n.serverAddr + ":10809"
	srv := startRemote(t, []string{"ip", "netns", "exec", n.name}, "nbdkit", "nbd://"+addr+"/", addr, false,
		"-f", "-i", n.serverAddr, "-p", "10809", "memory", "32M")
	d := StartDaemon(t, DaemonOpts{Bare: true})
	d.Call(t, "bdev_nbd_client_create", map[string]any{"name": "Remote0", "uri": srv.uri, "io_timeout_sec": 1})
	uri := d.cacheOver(t, "Vol0", "wt", "Cache0", 16, "Remote0")

	model := make([]byte, 32<<20)
	w := startRemoteWriter(t, uri, 2, 32<<20)
	time.Sleep(300 * time.Millisecond)
	n.link(t, false)
	waitFor(t, 10*time.Second, "the client sees the loss", func() bool {
		st, _ := d.nbdClient(t, "Remote0")
		return st.State == "reconnecting"
	})
	time.Sleep(time.Second)
	n.link(t, true)
	waitFor(t, 15*time.Second, "the client reconnects", func() bool {
		st, _ := d.nbdClient(t, "Remote0")
		return st.State == "connected" && st.Reconnects >= 1
	})
	w.finish(t, model)
	if i := testutil.FirstDiff(readExport(t, uri), model); i >= 0 {
		t.Fatalf("the volume differs from the model at %d", i)
	}
	if i := testutil.FirstDiff(readExport(t, srv.uri), model); i >= 0 {
		t.Fatalf("the server differs from the model at %d", i)
	}
}
