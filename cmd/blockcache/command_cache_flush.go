package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"blockcache/internal/rpcclient"
)

// flushPollInterval is how often cache flush asks how far the flush is.
const flushPollInterval = 200 * time.Millisecond

// newCacheFlushCmds returns the flush commands of the cache group. They
// take the group's -s/--rpc-socket and --timeout (see inheritedClientOpts).
func newCacheFlushCmds() []*cobra.Command {
	return []*cobra.Command{newCacheFlushCmd(), newCacheFlushStatusCmd(), newCacheFlushCancelCmd()}
}

// subcommandNamed returns root's subcommand called name; it panics when
// there is none, which is a bug in the command tree.
func subcommandNamed(root *cobra.Command, name string) *cobra.Command {
	for _, c := range root.Commands() {
		if c.Name() == name {
			return c
		}
	}
	panic("blockcache: no command " + name)
}

// inheritedClientOpts reads -s/--rpc-socket and --timeout, which a command
// inherits from its group (addClientFlags), once cobra has parsed them.
func inheritedClientOpts(cmd *cobra.Command) (*clientOpts, error) {
	sock, err := cmd.Flags().GetString("rpc-socket")
	if err != nil {
		return nil, err
	}
	timeout, err := cmd.Flags().GetDuration("timeout")
	if err != nil {
		return nil, err
	}
	return &clientOpts{socket: sock, timeout: timeout}, nil
}

// flushStatus is bdev_ocf_flush_status' result. Status is set once the
// flush has finished: 0 or a negative errno (-125 when cancelled).
type flushStatus struct {
	InProgress      bool   `json:"in_progress"`
	Status          *int32 `json:"status"`
	FlushedLines    int64  `json:"flushed_lines"`
	TotalLines      int64  `json:"total_lines"`
	RemainingBytes  uint64 `json:"remaining_bytes"`
	RateBytesPerSec uint64 `json:"rate_bytes_per_sec"`
	WriteThrough    bool   `json:"write_through"`
}

// failed reports whether the finished flush failed (or was cancelled).
func (s *flushStatus) failed() bool { return !s.InProgress && s.Status != nil && *s.Status != 0 }

// cancelled reports whether the finished flush was cancelled.
func (s *flushStatus) cancelled() bool {
	return !s.InProgress && s.Status != nil && *s.Status == -int32(syscall.ECANCELED)
}

// statusText is a finished flush's status with its errno's meaning:
// "0 (success)", "-5 (input/output error)".
func (s *flushStatus) statusText() string {
	if s.Status == nil {
		return "unknown"
	}
	if *s.Status == 0 {
		return "0 (success)"
	}
	return fmt.Sprintf("%d (%v)", *s.Status, syscall.Errno(-*s.Status))
}

// counts is "N of M lines written back".
func (s *flushStatus) counts() string {
	return fmt.Sprintf("%d of %d dirty lines written back", s.FlushedLines, s.TotalLines)
}

// pace is "1.5 MiB left at 40 MiB/s".
func (s *flushStatus) pace() string {
	return fmt.Sprintf("%s left at %s/s", humanSize(s.RemainingBytes), humanSize(s.RateBytesPerSec))
}

func getFlushStatus(c *rpcclient.Client, what, name string) (*flushStatus, error) {
	var st flushStatus
	if _, err := call(c, what, "bdev_ocf_flush_status", map[string]string{"name": name}, &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// What cache flush does when interrupted (SIGINT, Ctrl-C) while it waits.
const (
	interruptAsk    = "ask"    // ask on the terminal; leave without one
	interruptCancel = "cancel" // cancel the flush in the daemon
	interruptLeave  = "leave"  // stop waiting; the flush goes on
)

func newCacheFlushCmd() *cobra.Command {
	var noWait, forceProgress, writeThrough bool
	var onInterrupt string
	cmd := &cobra.Command{
		Use:   "flush NAME [--no-wait] [--progress] [--write-through] [--on-interrupt ask|cancel|leave]",
		Short: "Write the dirty data of NAME back to its core and wait (bdev_ocf_flush_start, bdev_ocf_flush_status)",
		Long: `Write every dirty line of the cached volume NAME back to its core device
(bdev_ocf_flush_start), then ask how far it is every 200 ms
(bdev_ocf_flush_status) until it has finished. While it runs, a progress bar
of the lines written back, with the bytes left and the rate, is shown on
stderr when stderr is a terminal (or with --progress); at the end one line
says how many lines were written back. A flush of NAME already running is
waited for rather than started again.

The flush writes back the lines dirty when it started, so it ends however
busy the volume is; lines written meanwhile may stay dirty. With
--write-through the volume's writes go write-through until the flush ends
(or is cancelled), so it leaves no dirty data at all.

The flush runs in the daemon. Interrupting this command (Ctrl-C) while it
waits asks whether to cancel the flush (--on-interrupt ask, the default,
when stdin is a terminal; without one it leaves the flush running), cancels
it (cancel: bdev_ocf_flush_cancel, which returns once the batch being written
back is done), or only stops waiting (leave; cache flush-cancel stops it
later). --no-wait only starts it (cache flush-status reports on it).

Exits 1 when the flush fails or is cancelled, with its status (a negative
errno; -125 when cancelled), and 130 when it stopped waiting for a flush
that goes on.`,
		Example: `  blockcache cache flush Cache1
  blockcache cache flush Cache1 --write-through --on-interrupt cancel
  blockcache cache flush Cache1 --no-wait && blockcache cache flush-status Cache1`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			what := "cache flush " + name
			switch onInterrupt {
			case interruptAsk, interruptCancel, interruptLeave:
			default:
				return fmt.Errorf("%s: --on-interrupt %q: want ask, cancel or leave", what, onInterrupt)
			}
			o, err := inheritedClientOpts(cmd)
			if err != nil {
				return err
			}
			return o.with(func(c *rpcclient.Client) error {
				params := map[string]any{"name": name}
				if writeThrough {
					params["write_through"] = true
				}
				if _, err := call(c, what, "bdev_ocf_flush_start", params, nil); err != nil {
					return err
				}
				if noWait {
					_, err := fmt.Fprintf(cmd.OutOrStdout(), "%s: flush started\n", name)
					return err
				}
				action := onInterrupt
				if action == interruptAsk && !isTerminalReader(cmd.InOrStdin()) {
					action = interruptLeave
				}
				interrupts := make(chan os.Signal, 1)
				signal.Notify(interrupts, os.Interrupt)
				defer signal.Stop(interrupts)
				w := &flushWaiter{c: c, what: what, name: name, out: cmd.OutOrStdout(), errOut: cmd.ErrOrStderr(),
					pv:         newProgressView(cmd.ErrOrStderr(), "flush "+name, "lines", forceProgress, 0),
					interrupts: interrupts, onInterrupt: action, answers: cmd.InOrStdin()}
				return w.wait()
			})
		},
	}
	f := cmd.Flags()
	f.BoolVar(&noWait, "no-wait", false, "only start the flush; do not wait for it")
	f.BoolVar(&forceProgress, "progress", false, "show the progress bar even when stderr is not a terminal")
	f.BoolVar(&writeThrough, "write-through", false, "hold the volume's writes write-through until the flush ends, so that it leaves nothing dirty")
	f.StringVar(&onInterrupt, "on-interrupt", interruptAsk, "what Ctrl-C does while waiting: ask, cancel (the flush) or leave (it running)")
	return cmd
}

// isTerminalReader reports whether r is a terminal.
func isTerminalReader(r io.Reader) bool {
	f, ok := r.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// flushWaiter waits for the flush of name, showing its progress, and
// handles interrupts as onInterrupt says (answers is where the answer to
// "cancel?" comes from).
type flushWaiter struct {
	c           *rpcclient.Client
	what, name  string
	out, errOut io.Writer
	pv          *progressView
	interrupts  <-chan os.Signal
	onInterrupt string
	answers     io.Reader
}

// wait polls the flush until it has finished and prints the result, or
// handles an interrupt.
func (w *flushWaiter) wait() error {
	var st *flushStatus
	for {
		var err error
		if st, err = getFlushStatus(w.c, w.what, w.name); err != nil {
			w.pv.finish()
			return err
		}
		if !st.InProgress {
			break
		}
		w.pv.describe(fmt.Sprintf("flush %s (%s)", w.name, st.pace()))
		w.pv.update(st.FlushedLines, st.TotalLines)
		select {
		case <-time.After(flushPollInterval):
		case <-w.interrupts:
			w.pv.finish()
			if w.cancelWanted() {
				return w.cancel()
			}
			fmt.Fprintf(w.errOut, "%s: stopped waiting; the flush goes on in the daemon (blockcache cache flush-status %s; cache flush-cancel %s stops it)\n",
				w.what, w.name, w.name)
			return exitError{130}
		}
	}
	if !st.failed() {
		w.pv.update(st.FlushedLines, st.TotalLines)
	}
	w.pv.finish()
	return w.result(st)
}

// cancelWanted decides, on an interrupt, whether to cancel the flush:
// asking on stderr and reading the answer when onInterrupt is ask. A
// second interrupt while it asks means no.
func (w *flushWaiter) cancelWanted() bool {
	switch w.onInterrupt {
	case interruptCancel:
		return true
	case interruptLeave:
		return false
	}
	fmt.Fprintf(w.errOut, "\n%s: cancel the flush in the daemon? [y/N] ", w.name)
	answer := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(w.answers).ReadString('\n')
		answer <- strings.ToLower(strings.TrimSpace(line))
	}()
	select {
	case a := <-answer:
		return a == "y" || a == "yes"
	case <-w.interrupts:
		fmt.Fprintln(w.errOut)
		return false
	}
}

// cancel cancels the flush and reports how it ended.
func (w *flushWaiter) cancel() error {
	var running bool
	if _, err := call(w.c, w.what, "bdev_ocf_flush_cancel", map[string]string{"name": w.name}, &running); err != nil {
		return err
	}
	st, err := getFlushStatus(w.c, w.what, w.name)
	if err != nil {
		return err
	}
	return w.result(st)
}

// result prints how the flush ended, or returns why it failed.
func (w *flushWaiter) result(st *flushStatus) error {
	switch {
	case st.cancelled():
		return fmt.Errorf("%s: flush cancelled, status %s, %s", w.what, st.statusText(), st.counts())
	case st.failed():
		return fmt.Errorf("%s: flush failed with status %s, %s", w.what, st.statusText(), st.counts())
	}
	_, err := fmt.Fprintf(w.out, "%s: flushed, %s\n", w.name, st.counts())
	return err
}

func newCacheFlushCancelCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "flush-cancel NAME",
		Short: "Cancel the running flush of NAME (bdev_ocf_flush_cancel)",
		Long: `Cancel the flush of the cached volume NAME that bdev_ocf_flush_start (cache
flush) started, and wait until it has stopped: after the batch it is writing
back (at most 128 lines). The lines written back so far stay clean, the rest
dirty; the flush then reports status -125 (cache flush-status). A flush
that held the volume write-through gives it back its mode. Prints whether a
flush was running; exits 0 either way.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			what := "cache flush-cancel " + name
			o, err := inheritedClientOpts(cmd)
			if err != nil {
				return err
			}
			return o.with(func(c *rpcclient.Client) error {
				var running bool
				if _, err := call(c, what, "bdev_ocf_flush_cancel", map[string]string{"name": name}, &running); err != nil {
					return err
				}
				if !running {
					_, err := fmt.Fprintf(cmd.OutOrStdout(), "%s: no flush running\n", name)
					return err
				}
				st, err := getFlushStatus(c, what, name)
				if err != nil {
					return err
				}
				_, err = fmt.Fprintf(cmd.OutOrStdout(), "%s: flush cancelled, %s\n", name, st.counts())
				return err
			})
		},
	}
}

func newCacheFlushStatusCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "flush-status NAME [--json]",
		Short: "Show how far the flush of NAME is, or how the last one ended (bdev_ocf_flush_status)",
		Long: `Show whether a flush of the cached volume NAME is running, how many of its
dirty lines it has written back, the bytes it has left and its rate over
the last 5 s (and whether it holds the volume write-through); or how the
last flush ended: its status (0, or a negative errno; -125 when cancelled)
and its counts (bdev_ocf_flush_status). With no flush since the volume
started it reports a finished flush of 0 lines. Exits 0 whatever the
flush's status; --json prints the RPC's result for scripts.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			what := "cache flush-status " + name
			o, err := inheritedClientOpts(cmd)
			if err != nil {
				return err
			}
			return o.with(func(c *rpcclient.Client) error {
				var st flushStatus
				raw, err := call(c, what, "bdev_ocf_flush_status", map[string]string{"name": name}, &st)
				if err != nil {
					return err
				}
				if asJSON {
					return printResult(cmd.OutOrStdout(), raw)
				}
				w := cmd.OutOrStdout()
				switch {
				case st.InProgress:
					pct := ""
					if st.TotalLines > 0 {
						pct = fmt.Sprintf(" (%.1f%%)", 100*float64(st.FlushedLines)/float64(st.TotalLines))
					}
					wt := ""
					if st.WriteThrough {
						wt = ", writes held write-through"
					}
					_, err = fmt.Fprintf(w, "%s: flush in progress, %s%s, %s%s\n", name, st.counts(), pct, st.pace(), wt)
				case st.cancelled():
					_, err = fmt.Fprintf(w, "%s: flush cancelled, status %s, %s\n", name, st.statusText(), st.counts())
				case st.failed():
					_, err = fmt.Fprintf(w, "%s: flush failed, status %s, %s\n", name, st.statusText(), st.counts())
				default:
					_, err = fmt.Fprintf(w, "%s: flush finished, status %s, %s\n", name, st.statusText(), st.counts())
				}
				return err
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print bdev_ocf_flush_status' result as JSON")
	return cmd
}
