package errinj_test

import (
	"bytes"
	"errors"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/google/uuid"

	"blockcache/internal/bdev"
	"blockcache/internal/bdev/bdevtest"
	"blockcache/internal/bdev/errinj"
)

func TestNewErrorBdev(t *testing.T) {
	m := bdevtest.NewMalloc(t, "Malloc0", 64)
	id := uuid.New()
	d, _ := errinj.NewErrorBdev(m, id)
	want := bdev.Info{Name: "EE_Malloc0", UUID: id, ProductName: "Error Injection Disk", BlockSize: 512, NumBlocks: 64, Abilities: m.Info().Abilities}
	if d.Info() != want {
		t.Fatalf("Info = %+v, want %+v", d.Info(), want)
	}
	if d2, _ := errinj.NewErrorBdev(m, uuid.Nil); d2.Info().UUID == uuid.Nil || d2.Info().UUID == m.Info().UUID {
		t.Fatal("nil id not replaced by a fresh UUID")
	}
	// Registered next to its base without conflict.
	r := bdev.NewRegistry()
	if err := r.Register(m); err != nil {
		t.Fatal(err)
	}
	if err := r.Register(d); err != nil {
		t.Fatalf("register EE_ device beside its base: %v", err)
	}
	// Nothing is armed at first.
	bdevtest.MustRead(t, d, 0, 512)
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
}

func TestSPDKFailures(t *testing.T) {
	d, inj := errinj.NewErrorBdev(bdevtest.NewMalloc(t, "Malloc0", 64), uuid.Nil)
	if err := inj.Inject(errinj.InjectOpts{IOType: errinj.IOTypeRead, ErrorType: errinj.ErrorFailure, Num: 2}); err != nil {
		t.Fatal(err)
	}
	if inj.Remaining(errinj.IOTypeRead) != 2 {
		t.Fatalf("Remaining = %d", inj.Remaining(errinj.IOTypeRead))
	}
	bdevtest.MustWrite(t, d, make([]byte, 512), 0, false) // writes unaffected
	p := make([]byte, 512)
	for i := range 2 {
		if err := d.ReadAt(p, 0); !errors.Is(err, errinj.ErrInjected) || bdev.Errno(err) != syscall.EIO {
			t.Fatalf("read %d = %v, want injected EIO", i, err)
		}
	}
	if err := d.ReadAt(p, 0); err != nil {
		t.Fatalf("third read = %v, want success", err)
	}

	// "all" arms read, write, flush and unmap; write-zeroes is never faulted.
	if err := inj.Inject(errinj.InjectOpts{IOType: errinj.IOTypeAll, ErrorType: errinj.ErrorFailure, Num: 1}); err != nil {
		t.Fatal(err)
	}
	if err := d.WriteZeroes(0, 512); err != nil {
		t.Fatalf("write-zeroes = %v, want success", err)
	}
	for name, err := range map[string]error{
		"read": d.ReadAt(p, 0), "write": d.WriteAt(p, 0, false), "flush": d.Flush(), "unmap": d.Discard(0, 512),
	} {
		if !errors.Is(err, errinj.ErrInjected) {
			t.Errorf("%s after all = %v, want injected", name, err)
		}
	}
	if err := d.ReadAt(p, 0); err != nil {
		t.Fatalf("read after its one error = %v", err)
	}

	// "clear" disarms everything.
	if err := inj.Inject(errinj.InjectOpts{IOType: errinj.IOTypeAll, ErrorType: errinj.ErrorFailure, Num: 5}); err != nil {
		t.Fatal(err)
	}
	if err := inj.Inject(errinj.InjectOpts{IOType: errinj.IOTypeClear}); err != nil {
		t.Fatal(err)
	}
	for _, typ := range []errinj.IOType{errinj.IOTypeRead, errinj.IOTypeWrite, errinj.IOTypeFlush, errinj.IOTypeUnmap} {
		if inj.Remaining(typ) != 0 {
			t.Errorf("%v still armed after clear", typ)
		}
	}
	if err := d.Flush(); err != nil {
		t.Fatalf("flush after clear = %v", err)
	}
}

func TestSPDKCorruptData(t *testing.T) {
	m := bdevtest.NewMalloc(t, "Malloc0", 64)
	d, inj := errinj.NewErrorBdev(m, uuid.Nil)
	p := bdevtest.Pattern(3, 1024)
	if err := inj.Inject(errinj.InjectOpts{IOType: errinj.IOTypeWrite, ErrorType: errinj.ErrorCorruptData, Num: 1, CorruptOffset: 600, CorruptValue: 0x80}); err != nil {
		t.Fatal(err)
	}
	bdevtest.MustWrite(t, d, p, 0, false)
	bdevtest.MustWrite(t, d, p, 1024, false) // only one corrupted
	want := bytes.Clone(p)
	want[600] ^= 0x80
	if got := bdevtest.MustRead(t, m, 0, 1024); !bytes.Equal(got, want) {
		t.Fatal("first write not corrupted at byte 600")
	}
	if got := bdevtest.MustRead(t, m, 1024, 1024); !bytes.Equal(got, p) {
		t.Fatal("second write corrupted")
	}

	if err := inj.Inject(errinj.InjectOpts{IOType: errinj.IOTypeRead, ErrorType: errinj.ErrorCorruptData, Num: 1, CorruptOffset: 2, CorruptValue: 1}); err != nil {
		t.Fatal(err)
	}
	got := bdevtest.MustRead(t, d, 1024, 512)
	if got[2] != p[2]^1 || !bytes.Equal(got[3:], p[3:512]) {
		t.Fatal("read not corrupted at byte 2 alone")
	}

	if err := inj.Inject(errinj.InjectOpts{IOType: errinj.IOTypeRead, ErrorType: errinj.ErrorCorruptData, Num: 1}); err == nil {
		t.Fatal("corrupt_value 0 accepted")
	}
	if err := inj.Inject(errinj.InjectOpts{IOType: errinj.IOTypeRead, ErrorType: 0, Num: 1}); err == nil {
		t.Fatal("error type 0 accepted")
	}
	if err := inj.Inject(errinj.InjectOpts{IOType: 17, ErrorType: errinj.ErrorFailure}); err == nil {
		t.Fatal("unknown io type accepted")
	}
}

func TestSPDKNames(t *testing.T) {
	for _, s := range []string{"read", "write", "flush", "unmap", "all", "clear"} {
		typ, err := errinj.ParseIOType(s)
		if err != nil || typ.String() != s {
			t.Errorf("ParseIOType(%q) = %v, %v", s, typ, err)
		}
	}
	if _, err := errinj.ParseIOType("write_zeroes"); err == nil {
		t.Error("ParseIOType accepted write_zeroes")
	}
	for _, s := range []string{"failure", "corrupt_data"} {
		typ, err := errinj.ParseErrorType(s)
		if err != nil || typ.String() != s {
			t.Errorf("ParseErrorType(%q) = %v, %v", s, typ, err)
		}
	}
	for _, s := range []string{"pending", "nomem", "nvme"} {
		if _, err := errinj.ParseErrorType(s); !errors.Is(err, bdev.ErrNotSupported) {
			t.Errorf("ParseErrorType(%q) = %v, want ErrNotSupported", s, err)
		}
	}
	if _, err := errinj.ParseErrorType("boom"); err == nil || errors.Is(err, bdev.ErrNotSupported) {
		t.Errorf("ParseErrorType(boom) = %v", err)
	}
	if errinj.IOType(9).String() != "IOType(9)" || errinj.ErrorType(9).String() != "ErrorType(9)" {
		t.Error("unknown names")
	}
}

// TestSPDKConcurrentCountdown checks that num_errors is honoured exactly
// when many goroutines issue IO at once.
func TestSPDKConcurrentCountdown(t *testing.T) {
	d, inj := errinj.NewErrorBdev(bdevtest.NewMalloc(t, "Malloc0", 64), uuid.Nil)
	if err := inj.Inject(errinj.InjectOpts{IOType: errinj.IOTypeRead, ErrorType: errinj.ErrorFailure, Num: 50}); err != nil {
		t.Fatal(err)
	}
	var failed atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			p := make([]byte, 512)
			for range 100 {
				if err := d.ReadAt(p, 0); errors.Is(err, errinj.ErrInjected) {
					failed.Add(1)
				} else if err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	if failed.Load() != 50 || inj.Remaining(errinj.IOTypeRead) != 0 {
		t.Fatalf("%d reads failed, %d remaining; want 50 and 0", failed.Load(), inj.Remaining(errinj.IOTypeRead))
	}
}
