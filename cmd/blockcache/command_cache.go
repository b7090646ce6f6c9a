package main

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"blockcache/internal/rpcclient"
)

// cacheModes are OCF's cache modes, as bdev_ocf_create and
// bdev_ocf_set_cache_mode take them.
var cacheModes = []string{"wt", "wb", "wa", "wi", "pt", "wo"}

// cacheLineSizes are the line sizes bdev_ocf_create takes, in KiB.
var cacheLineSizes = []uint64{4, 8, 16, 32, 64}

const modeHelp = "wt (write-through), wb (write-back), wa (write-around), wi (write-invalidate), pt (pass-through), wo (write-only)"

func checkMode(mode string) error {
	if !slices.Contains(cacheModes, mode) {
		return fmt.Errorf("unknown cache mode %q: use %s", mode, modeHelp)
	}
	return nil
}

func newCacheCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cache",
		Short: "Create, inspect and manage cached volumes (OCF vbdevs)",
		Args:  cobra.NoArgs,
		RunE:  groupRunE,
	}
	o := addClientFlags(cmd)
	cmd.AddCommand(
		newCacheCreateCmd(o),
		newCacheDeleteCmd(o),
		newCacheListCmd(o),
		newCacheStatsCmd(o),
		newCacheSetModeCmd(o),
		newCacheResetStatsCmd(o),
	)
	cmd.AddCommand(newCachePolicyCmds(o)...)
	return cmd
}

// ocfCreateParams are bdev_ocf_create's params; cache_line_size and
// volatile_dirty_metadata are sent only when given, as rpc.py does.
type ocfCreateParams struct {
	Name                  string `json:"name"`
	Mode                  string `json:"mode"`
	CacheLineSize         uint64 `json:"cache_line_size,omitempty"`
	CacheBdevName         string `json:"cache_bdev_name"`
	CoreBdevName          string `json:"core_bdev_name"`
	VolatileDirtyMetadata bool   `json:"volatile_dirty_metadata,omitempty"`
}

func newCacheCreateCmd(o *clientOpts) *cobra.Command {
	var p ocfCreateParams
	var buffered bool
	cmd := &cobra.Command{
		Use:   "create NAME --cache PATH|BDEV --core PATH|BDEV [--mode MODE] [--line-size-kib N] [--volatile-dirty-metadata] [--buffered]",
		Short: "Create a cached volume NAME: --cache in front of --core (bdev_ocf_create)",
		Long: `Create the cached volume NAME, with --cache caching --core (bdev_ocf_create).
Each is a bdev name or, if it contains a slash, the path of a file or block
device: a file bdev is made for it first (bdev_aio_create), named NAME_cache
or NAME_core, and the output says so. If the volume cannot be created, the
file bdevs made for it are deleted again. File bdevs bypass the page cache
(O_DIRECT) unless --buffered is given. If a named bdev does not exist yet,
the volume waits for it (cache list shows it as waiting) and this command
says so on stderr. Prints the volume's name last.

Modes: ` + modeHelp + `.`,
		Example: `  blockcache cache create Cache1 --mode wb --cache Malloc0 --core Malloc1 --line-size-kib 16
  blockcache cache create cache0 --cache /var/tmp/cache.img --core /dev/loop0`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p.Name = args[0]
			what := "cache create " + p.Name
			if err := checkMode(p.Mode); err != nil {
				return fmt.Errorf("%s: --mode: %w", what, err)
			}
			if p.CacheLineSize != 0 && !slices.Contains(cacheLineSizes, p.CacheLineSize) {
				return fmt.Errorf("%s: --line-size-kib must be 4, 8, 16, 32 or 64, not %d", what, p.CacheLineSize)
			}
			bases := []struct {
				role string
				arg  *string
			}{{"cache", &p.CacheBdevName}, {"core", &p.CoreBdevName}}
			for _, b := range bases {
				if isPath(*b.arg) {
					path, err := absPath(*b.arg)
					if err != nil {
						return fmt.Errorf("%s: --%s: %w", what, b.role, err)
					}
					*b.arg = path
				}
			}
			return o.with(func(c *rpcclient.Client) error {
				// Said only once the volume exists: on failure the file
				// bdevs are gone again.
				var said strings.Builder
				var made []string // file bdevs made here, deleted again on failure
				undo := func(err error) error {
					if len(made) == 0 {
						return err
					}
					var deleted, left []string
					for _, name := range made {
						if derr := deleteFileBdev(c, "deleting file bdev "+name, name); derr != nil {
							left = append(left, derr.Error())
						} else {
							deleted = append(deleted, name)
						}
					}
					if len(deleted) > 0 {
						err = fmt.Errorf("%w; deleted the file bdev(s) it had made: %s", err, strings.Join(deleted, ", "))
					}
					if len(left) > 0 {
						err = fmt.Errorf("%w; left behind: %s", err, strings.Join(left, "; "))
					}
					return err
				}
				for _, b := range bases {
					if !isPath(*b.arg) {
						continue
					}
					path, name := *b.arg, p.Name+"_"+b.role
					_, err := createFileBdev(c, fmt.Sprintf("%s: --%s: file bdev %s on %s", what, b.role, name, path),
						aioCreateParams{Name: name, Filename: path, Buffered: buffered})
					if err != nil {
						return undo(err)
					}
					made = append(made, name)
					if !buffered {
						if err := noteBuffered(c, cmd.ErrOrStderr(), what, name, path); err != nil {
							return undo(err)
						}
					}
					*b.arg = name
					fmt.Fprintf(&said, "created file bdev %s on %s\n", name, path)
				}
				raw, err := call(c, what, "bdev_ocf_create", p, nil)
				if err != nil {
					return undo(err)
				}
				for _, b := range bases {
					exists, err := bdevExists(c, what, *b.arg)
					if err != nil {
						return err
					}
					if !exists {
						fmt.Fprintf(cmd.ErrOrStderr(), "blockcache: %s: waiting for %s bdev %q, which does not exist yet\n", what, b.role, *b.arg)
					}
				}
				out := cmd.OutOrStdout()
				if _, err := io.WriteString(out, said.String()); err != nil {
					return err
				}
				return printResult(out, raw)
			})
		},
	}
	f := cmd.Flags()
	f.StringVarP(&p.Mode, "mode", "m", "wt", "cache mode: "+strings.Join(cacheModes, ", "))
	f.StringVar(&p.CacheBdevName, "cache", "", "the cache bdev, or the path of a file or device to make one of (the fast device)")
	f.StringVar(&p.CoreBdevName, "core", "", "the core bdev, or the path of a file or device to make one of (the slow device)")
	f.Uint64Var(&p.CacheLineSize, "line-size-kib", 0, "cache line size in KiB: 4, 8, 16, 32 or 64 (default 4)")
	f.BoolVar(&p.VolatileDirtyMetadata, "volatile-dirty-metadata", false,
		"make a new cache's dirty state durable only at a flush or FUA write, as a disk's volatile write cache: faster writes, but a crash, even of the process, loses the writes since the last flush")
	f.BoolVar(&buffered, "buffered", false, "for --cache or --core paths: "+bufferedHelp)
	cmd.MarkFlagRequired("cache") //nolint:errcheck // the flag exists
	cmd.MarkFlagRequired("core")  //nolint:errcheck // the flag exists
	return cmd
}

func newCacheDeleteCmd(o *clientOpts) *cobra.Command {
	return &cobra.Command{
		Use:     "delete NAME",
		Aliases: []string{"rm"},
		Short:   "Delete the cached volume NAME, releasing its cache and core bdevs (bdev_ocf_delete)",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.with(func(c *rpcclient.Client) error {
				_, err := call(c, "cache delete "+args[0], "bdev_ocf_delete", map[string]string{"name": args[0]}, nil)
				return err
			})
		},
	}
}

// ocfBdev is one element of bdev_ocf_get_bdevs.
type ocfBdev struct {
	Name    string `json:"name"`
	Started bool   `json:"started"`
	Cache   struct {
		Name     string `json:"name"`
		Attached bool   `json:"attached"`
	} `json:"cache"`
	Core struct {
		Name     string `json:"name"`
		Attached bool   `json:"attached"`
	} `json:"core"`
	Failed bool   `json:"failed"`
	Error  string `json:"error"`
}

// state is the vbdev's lifecycle state as cache list shows it.
func (v ocfBdev) state() string {
	switch {
	case v.Started:
		return "started"
	case v.Failed:
		return "failed"
	}
	return "waiting"
}

// ocfDriverSpecific is the driver_specific object of an OCF vbdev in
// bdev_get_bdevs.
type ocfDriverSpecific struct {
	CacheDevice   string `json:"cache_device"`
	CoreDevice    string `json:"core_device"`
	Mode          string `json:"mode"`
	CacheLineSize uint64 `json:"cache_line_size"` // KiB
}

// ocfDetails returns the driver_specific objects of the started OCF
// vbdevs, by name.
func ocfDetails(c *rpcclient.Client, what string) (map[string]ocfDriverSpecific, error) {
	var bdevs []bdevObject
	if _, err := call(c, what, "bdev_get_bdevs", nil, &bdevs); err != nil {
		return nil, err
	}
	out := map[string]ocfDriverSpecific{}
	for _, b := range bdevs {
		var ds ocfDriverSpecific
		if len(b.DriverSpecific) > 0 && json.Unmarshal(b.DriverSpecific, &ds) == nil && ds.Mode != "" {
			out[b.Name] = ds
		}
	}
	return out, nil
}

func newCacheListCmd(o *clientOpts) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "list [NAME]",
		Aliases: []string{"ls"},
		Short:   "List cached volumes (bdev_ocf_get_bdevs); NAME matches a volume, cache or core bdev",
		Long: `List cached volumes (bdev_ocf_get_bdevs); NAME matches a volume, cache or
core bdev. STATE is started, waiting (a base bdev is missing; the volume
starts when it appears) or failed (its start failed, e.g. a damaged cache at
start-up; REASON says why; retry with cache create, or cache delete).`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var params any
			what := "cache list"
			if len(args) == 1 {
				params = map[string]string{"name": args[0]}
				what += " " + args[0]
			}
			return o.with(func(c *rpcclient.Client) error {
				var vbdevs []ocfBdev
				raw, err := call(c, what, "bdev_ocf_get_bdevs", params, &vbdevs)
				if err != nil {
					return err
				}
				if asJSON {
					return printResult(cmd.OutOrStdout(), raw)
				}
				details, err := ocfDetails(c, what)
				if err != nil {
					return err
				}
				tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 2, ' ', 0)
				// REASON is last: a failed volume's reason is long, and
				// a trailing cell widens no column.
				fmt.Fprintln(tw, "NAME\tSTATE\tMODE\tLINE SIZE\tCACHE\tCACHE ATTACHED\tCORE\tCORE ATTACHED\tREASON")
				for _, v := range vbdevs {
					mode, line := "-", "-"
					if d, ok := details[v.Name]; ok {
						mode, line = d.Mode, strconv.FormatUint(d.CacheLineSize, 10)+" KiB"
					}
					reason := "-"
					if v.Failed {
						reason = v.Error
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", v.Name, v.state(), mode, line,
						v.Cache.Name, yesNo(v.Cache.Attached), v.Core.Name, yesNo(v.Core.Attached), reason)
				}
				return tw.Flush()
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print bdev_ocf_get_bdevs' result as JSON instead of a table")
	return cmd
}

func newCacheSetModeCmd(o *clientOpts) *cobra.Command {
	return &cobra.Command{
		Use:   "set-mode NAME MODE",
		Short: "Change the cache mode of NAME (bdev_ocf_set_cache_mode)",
		Long:  "Change the cache mode of the volume NAME and print the new mode.\n\nModes: " + modeHelp + ".",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			name, mode := args[0], args[1]
			if err := checkMode(mode); err != nil {
				return fmt.Errorf("cache set-mode %s: %w", name, err)
			}
			return o.with(func(c *rpcclient.Client) error {
				raw, err := call(c, "cache set-mode "+name, "bdev_ocf_set_cache_mode",
					map[string]string{"name": name, "mode": mode}, nil)
				if err != nil {
					return err
				}
				return printResult(cmd.OutOrStdout(), raw)
			})
		},
	}
}

func newCacheResetStatsCmd(o *clientOpts) *cobra.Command {
	return &cobra.Command{
		Use:   "reset-stats NAME",
		Short: "Zero the statistics of NAME (bdev_ocf_reset_stats)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.with(func(c *rpcclient.Client) error {
				_, err := call(c, "cache reset-stats "+args[0], "bdev_ocf_reset_stats", map[string]string{"name": args[0]}, nil)
				return err
			})
		},
	}
}
