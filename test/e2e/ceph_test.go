package e2e

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// cephTimeout bounds test/ceph/run.sh: installing the Ceph packages on a
// fresh machine takes a few minutes, the run itself about one.
const cephTimeout = 8 * time.Minute

// TestCephRBDCore runs test/ceph/run.sh with this package's blockcache
// binary: a one-node Ceph cluster, an RBD image served by qemu-nbd, and
// blockcache in wb in front of it through the NBD client bdev. Data written
// through blockcache must reach RBD at a cache flush and not before, and
// writes acknowledged while qemu-nbd restarts must reach RBD at the next
// flush; both are read back with rbd export, around blockcache and qemu-nbd.
func TestCephRBDCore(t *testing.T) {
	t.Parallel()
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(root, "test", "ceph", "run.sh")
	ctx, cancel := context.WithTimeout(context.Background(), cephTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", script)
	cmd.Env = append(os.Environ(), "BLOCKCACHE="+binPath)
	// Its own process group, so that the Ceph daemons, qemu-nbd and
	// blockcache it started can be killed if it is itself killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// On timeout SIGTERM lets the script's trap tear everything down.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 30 * time.Second
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err = cmd.Run()
	if cmd.Process != nil {
		// Whatever the script left behind (nothing, unless it was killed).
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	if ctx.Err() != nil {
		t.Fatalf("%s did not finish within %v:\n%s", script, cephTimeout, out.String())
	}
	if err != nil {
		t.Fatalf("%s: %v after %v:\n%s", script, err, time.Since(start).Round(time.Second), out.String())
	}
	if !strings.Contains(out.String(), "ceph test: passed") {
		t.Fatalf("%s exited 0 without saying it passed:\n%s", script, out.String())
	}
	t.Logf("%s passed in %v", script, time.Since(start).Round(time.Second))
}
