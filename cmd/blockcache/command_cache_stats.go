package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"blockcache/internal/rpcclient"
)

func newCacheStatsCmd(o *clientOpts) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "stats NAME",
		Short: "Show the statistics of NAME (bdev_ocf_get_stats), like casadm -P",
		Long: `Show the statistics of the cached volume NAME (bdev_ocf_get_stats) as tables
like Open CAS's casadm -P: usage, request, block and error statistics, each
row with its count, percentage and units. --json prints the RPC's result
instead, with SPDK's percentage strings ("12.5" there is 12.05%).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			what := "cache stats " + name
			return o.with(func(c *rpcclient.Client) error {
				raw, err := call(c, what, "bdev_ocf_get_stats", map[string]string{"name": name}, nil)
				if err != nil {
					return err
				}
				if asJSON {
					return printResult(cmd.OutOrStdout(), raw)
				}
				sections, err := parseStats(raw)
				if err != nil {
					return fmt.Errorf("%s: unexpected bdev_ocf_get_stats result: %w", what, err)
				}
				// The header is a courtesy: the volume's settings, when
				// bdev_get_bdevs has them.
				header := [][2]string{{"Cache name", name}}
				if details, err := ocfDetails(c, what); err == nil {
					if d, ok := details[name]; ok {
						header = append(header,
							[2]string{"Cache mode", d.Mode},
							[2]string{"Cache device", d.CacheDevice},
							[2]string{"Core device", d.CoreDevice},
							[2]string{"Cache line size", strconv.FormatUint(d.CacheLineSize, 10) + " KiB"})
					}
				}
				return writeStats(cmd.OutOrStdout(), header, sections)
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print bdev_ocf_get_stats' result as JSON instead of tables")
	return cmd
}

// statSection is one group of bdev_ocf_get_stats, as a table.
type statSection struct {
	title string
	rows  []statRow
}

type statRow struct {
	label, count, percent, units string
}

// statTitles and statLabels are casadm -P's words for
// bdev_ocf_get_stats' groups and keys. Keys not listed are shown as they
// are, so that a daemon reporting more still shows it.
var (
	statTitles = map[string]string{
		"usage":    "Usage statistics",
		"requests": "Request statistics",
		"blocks":   "Block statistics",
		"errors":   "Error statistics",
	}
	statLabels = map[string]map[string]string{
		"usage": {
			"occupancy": "Occupancy",
			"free":      "Free",
			"clean":     "Clean",
			"dirty":     "Dirty",
		},
		"requests": {
			"rd_hits":           "Read hits",
			"rd_partial_misses": "Read partial misses",
			"rd_full_misses":    "Read full misses",
			"rd_total":          "Read total",
			"wr_hits":           "Write hits",
			"wr_partial_misses": "Write partial misses",
			"wr_full_misses":    "Write full misses",
			"wr_total":          "Write total",
			"rd_pt":             "Pass-Through reads",
			"wr_pt":             "Pass-Through writes",
			"serviced":          "Serviced requests",
			"total":             "Total requests",
		},
		"blocks": {
			"core_volume_rd":     "Reads from core(s)",
			"core_volume_wr":     "Writes to core(s)",
			"core_volume_total":  "Total to/from core(s)",
			"cache_volume_rd":    "Reads from cache",
			"cache_volume_wr":    "Writes to cache",
			"cache_volume_total": "Total to/from cache",
			"volume_rd":          "Reads from exported object(s)",
			"volume_wr":          "Writes to exported object(s)",
			"volume_total":       "Total to/from exported object(s)",
		},
		"errors": {
			"core_volume_rd":     "Core read errors",
			"core_volume_wr":     "Core write errors",
			"core_volume_total":  "Core total errors",
			"cache_volume_rd":    "Cache read errors",
			"cache_volume_wr":    "Cache write errors",
			"cache_volume_total": "Cache total errors",
			"total":              "Total errors",
		},
	}
)

// parseStats turns bdev_ocf_get_stats' result into tables, in the order
// the daemon wrote its groups and keys.
func parseStats(raw json.RawMessage) ([]statSection, error) {
	groups, err := orderedObject(raw)
	if err != nil {
		return nil, err
	}
	var out []statSection
	for _, g := range groups {
		title, ok := statTitles[g.Key]
		if !ok {
			title = g.Key
		}
		leaves, err := orderedObject(g.Value)
		if err != nil {
			return nil, fmt.Errorf("%q: %w", g.Key, err)
		}
		s := statSection{title: title}
		for _, l := range leaves {
			var e struct {
				Count      json.Number `json:"count"`
				Percentage string      `json:"percentage"`
				Units      string      `json:"units"`
			}
			if err := json.Unmarshal(l.Value, &e); err != nil {
				return nil, fmt.Errorf("%s.%s: %w", g.Key, l.Key, err)
			}
			label, ok := statLabels[g.Key][l.Key]
			if !ok {
				label = l.Key
			}
			s.rows = append(s.rows, statRow{label, e.Count.String(), statPercent(e.Percentage), e.Units})
		}
		out = append(out, s)
	}
	return out, nil
}

// statPercent reads SPDK's percentage string and prints it with one
// decimal as casadm does. SPDK prints hundredths of a percent h as
// "%lu.%lu" of h/100 and h%100, so "12.5" is 12.05% and "12.50" is 12.5%:
// the part after the dot is a count of hundredths, not a decimal fraction.
// A string not of that form is shown as it is.
func statPercent(s string) string {
	q, r, ok := strings.Cut(s, ".")
	if !ok {
		return s
	}
	whole, err1 := strconv.ParseUint(q, 10, 64)
	hundredths, err2 := strconv.ParseUint(r, 10, 64)
	if err1 != nil || err2 != nil || hundredths >= 100 || whole > 1<<50 {
		return s
	}
	tenths := (whole*100 + hundredths + 5) / 10 // rounded half up
	return fmt.Sprintf("%d.%d", tenths/10, tenths%10)
}

// writeStats prints the header lines and then one box per section, with
// the columns aligned across sections:
//
//	╔══════════════════╤═══════╤═══════╤═════════════╗
//	║ Usage statistics │ Count │     % │ Units       ║
//	╠══════════════════╪═══════╪═══════╪═════════════╣
//	║ Occupancy        │     0 │   0.0 │ 4KiB blocks ║
//	╚══════════════════╧═══════╧═══════╧═════════════╝
func writeStats(w io.Writer, header [][2]string, sections []statSection) error {
	var b strings.Builder
	kw := 0
	for _, h := range header {
		kw = max(kw, width(h[0]))
	}
	for _, h := range header {
		fmt.Fprintf(&b, "%s%s  %s\n", h[0], pad(kw-width(h[0])), h[1])
	}

	wl, wc, wp, wu := 0, width("Count"), width("%"), width("Units")
	for _, s := range sections {
		wl = max(wl, width(s.title))
		for _, r := range s.rows {
			wl, wc, wp, wu = max(wl, width(r.label)), max(wc, width(r.count)), max(wp, width(r.percent)), max(wu, width(r.units))
		}
	}
	rule := func(l, m, r string) {
		fmt.Fprintf(&b, "%s%s%s%s%s%s%s%s%s\n", l, strings.Repeat("═", wl+2), m, strings.Repeat("═", wc+2), m,
			strings.Repeat("═", wp+2), m, strings.Repeat("═", wu+2), r)
	}
	row := func(label, count, percent, units string) {
		fmt.Fprintf(&b, "║ %s%s │ %s%s │ %s%s │ %s%s ║\n", label, pad(wl-width(label)), pad(wc-width(count)), count,
			pad(wp-width(percent)), percent, units, pad(wu-width(units)))
	}
	for _, s := range sections {
		b.WriteString("\n")
		rule("╔", "╤", "╗")
		row(s.title, "Count", "%", "Units")
		rule("╠", "╪", "╣")
		for _, r := range s.rows {
			row(r.label, r.count, r.percent, r.units)
		}
		rule("╚", "╧", "╝")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func width(s string) int { return utf8.RuneCountInString(s) }

func pad(n int) string { return strings.Repeat(" ", max(n, 0)) }
