package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"blockcache/internal/metrics"
	"blockcache/internal/rpcclient"
)

func newTopCmd() *cobra.Command {
	var once bool
	var interval time.Duration
	var sortBy string
	cmd := &cobra.Command{
		Use:   "top",
		Short: "Live view of every cached volume: IOPS, MiB/s, hit ratio, dirty, cleaning, pass-through, latency",
		Long: `Show every cached volume, refreshed every --interval (1s) from
blockcache_get_metrics: read and write IOPS and MiB/s, the read hit ratio over
the last interval, dirty data, cache occupancy, the rate dirty data is written
back, pass-through requests per second by reason, and read and write latency
quantiles (the upper bound of the histogram bucket holding them).

Keys: n (name), r/w (read/write IOPS), R/W (read/write MiB/s), h (hit ratio),
d (dirty), o (occupancy), c (cleaning rate), l (read p99), p (pass-through)
sort by that column; q (or Esc, Ctrl-C) quits.

--once prints one table, over one interval, and exits: for scripts.`,
		Args: cobra.NoArgs,
	}
	o := addClientFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if interval < 10*time.Millisecond {
			return fmt.Errorf("--interval %v: must be at least 10ms", interval)
		}
		col, err := topSortKey(sortBy)
		if err != nil {
			return fmt.Errorf("--sort: %w", err)
		}
		return o.with(func(c *rpcclient.Client) error {
			fetch := func() (metrics.Snapshot, error) {
				var s metrics.Snapshot
				_, err := call(c, "top", "blockcache_get_metrics", nil, &s)
				return s, err
			}
			if once {
				prev, err := fetch()
				if err != nil {
					return err
				}
				time.Sleep(interval)
				cur, err := fetch()
				if err != nil {
					return err
				}
				rows := topRows(prev, cur)
				sortTopRows(rows, col)
				return writeTopTable(cmd.OutOrStdout(), rows)
			}
			return runTopUI(fetch, interval, col)
		})
	}
	f := cmd.Flags()
	f.BoolVar(&once, "once", false, "print one table over one interval and exit")
	f.DurationVar(&interval, "interval", time.Second, "refresh interval (and --once's measuring interval)")
	f.StringVar(&sortBy, "sort", "n", "column to sort by: its key (n r w R W h d o c l p) or title")
	return cmd
}
