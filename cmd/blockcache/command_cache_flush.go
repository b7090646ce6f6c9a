package main

import (
	"fmt"
	"io"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"blockcache/internal/rpcclient"
)

// flushPollInterval is how often cache flush asks how far the flush is.
const flushPollInterval = 200 * time.Millisecond

// newCacheFlushCmds returns the flush commands of the cache group. They
// take the group's -s/--rpc-socket and --timeout (see inheritedClientOpts).
func newCacheFlushCmds() []*cobra.Command {
	return []*cobra.Command{newCacheFlushCmd(), newCacheFlushStatusCmd()}
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
// flush has finished: 0 or a negative errno.
type flushStatus struct {
	InProgress   bool   `json:"in_progress"`
	Status       *int32 `json:"status"`
	FlushedLines int64  `json:"flushed_lines"`
	TotalLines   int64  `json:"total_lines"`
}

// failed reports whether the finished flush failed.
func (s *flushStatus) failed() bool { return !s.InProgress && s.Status != nil && *s.Status != 0 }

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

func getFlushStatus(c *rpcclient.Client, what, name string) (*flushStatus, error) {
	var st flushStatus
	if _, err := call(c, what, "bdev_ocf_flush_status", map[string]string{"name": name}, &st); err != nil {
		return nil, err
	}
	return &st, nil
}

func newCacheFlushCmd() *cobra.Command {
	var noWait, forceProgress bool
	cmd := &cobra.Command{
		Use:   "flush NAME [--no-wait] [--progress]",
		Short: "Write the dirty data of NAME back to its core and wait (bdev_ocf_flush_start, bdev_ocf_flush_status)",
		Long: `Write every dirty line of the cached volume NAME back to its core device
(bdev_ocf_flush_start), then ask how far it is every 200 ms
(bdev_ocf_flush_status) until it has finished. While it runs, a progress bar
of the lines written back is shown on stderr when stderr is a terminal (or
with --progress); at the end one line says how many lines were written back.
A flush of NAME already running is waited for rather than started again.

Exits 1 when the flush fails, with its status (a negative errno). The flush
runs in the daemon: interrupting this command does not stop it, and
--no-wait only starts it (cache flush-status reports on it).`,
		Example: `  blockcache cache flush Cache1
  blockcache cache flush Cache1 --no-wait && blockcache cache flush-status Cache1`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			what := "cache flush " + name
			o, err := inheritedClientOpts(cmd)
			if err != nil {
				return err
			}
			return o.with(func(c *rpcclient.Client) error {
				if _, err := call(c, what, "bdev_ocf_flush_start", map[string]string{"name": name}, nil); err != nil {
					return err
				}
				if noWait {
					_, err := fmt.Fprintf(cmd.OutOrStdout(), "%s: flush started\n", name)
					return err
				}
				return waitFlush(c, what, name, cmd.OutOrStdout(),
					newProgressView(cmd.ErrOrStderr(), "flush "+name, "lines", forceProgress, 0))
			})
		},
	}
	f := cmd.Flags()
	f.BoolVar(&noWait, "no-wait", false, "only start the flush; do not wait for it")
	f.BoolVar(&forceProgress, "progress", false, "show the progress bar even when stderr is not a terminal")
	return cmd
}

// waitFlush polls the flush of name until it has finished, showing its
// progress, and prints the result.
func waitFlush(c *rpcclient.Client, what, name string, out io.Writer, pv *progressView) error {
	var st *flushStatus
	for {
		var err error
		if st, err = getFlushStatus(c, what, name); err != nil {
			pv.finish()
			return err
		}
		if !st.InProgress {
			break
		}
		pv.update(st.FlushedLines, st.TotalLines)
		time.Sleep(flushPollInterval)
	}
	if !st.failed() {
		pv.update(st.FlushedLines, st.TotalLines)
	}
	pv.finish()
	if st.failed() {
		return fmt.Errorf("%s: flush failed with status %s, %s", what, st.statusText(), st.counts())
	}
	_, err := fmt.Fprintf(out, "%s: flushed, %s\n", name, st.counts())
	return err
}

func newCacheFlushStatusCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "flush-status NAME [--json]",
		Short: "Show how far the flush of NAME is, or how the last one ended (bdev_ocf_flush_status)",
		Long: `Show whether a flush of the cached volume NAME is running and how many of its
dirty lines it has written back, or how the last flush ended: its status (0,
or a negative errno) and its counts (bdev_ocf_flush_status). With no flush
since the volume started it reports a finished flush of 0 lines. Exits 0
whatever the flush's status; --json prints the RPC's result for scripts.`,
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
					_, err = fmt.Fprintf(w, "%s: flush in progress, %s%s\n", name, st.counts(), pct)
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
