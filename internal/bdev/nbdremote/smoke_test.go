package nbdremote

import (
	"bytes"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/uuid"
)

func TestSmokeNbdkit(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "s")
	cmd := exec.Command("nbdkit", "-f", "-U", sock, "memory", "64M")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	time.Sleep(300 * time.Millisecond)
	u, err := ParseURI("nbd+unix:///?socket=" + sock)
	if err != nil {
		t.Fatal(err)
	}
	d, err := Open("n", u, uuid.Nil, DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v %+v", d.Info(), d.Status())
	buf := bytes.Repeat([]byte{7}, 8192)
	if err := d.WriteAt(buf, 4096, true); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 8192)
	if err := d.ReadAt(got, 4096); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, buf) {
		t.Fatal("mismatch")
	}
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
}
