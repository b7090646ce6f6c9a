package main

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"blockcache/internal/rpcclient"
)

// The policy commands of the cache group: set-seqcutoff, set-cleaning,
// set-promotion and policies.

// Policy names, as the set methods take them.
var (
	seqCutoffPolicies = []string{"always", "full", "never"}
	cleaningPolicies  = []string{"alru", "acp", "nop"}
	promotionPolicies = []string{"always", "nhit"}
)

func newCachePolicyCmds(o *clientOpts) []*cobra.Command {
	return []*cobra.Command{
		newCacheSetSeqCutoffCmd(o),
		newCacheSetCleaningCmd(o),
		newCacheSetPromotionCmd(o),
		newCachePoliciesCmd(o),
	}
}

func checkPolicy(kind, policy string, allowed []string) error {
	if !slices.Contains(allowed, policy) {
		return fmt.Errorf("unknown %s policy %q: use %s", kind, policy, strings.Join(allowed, ", "))
	}
	return nil
}

// uintFlag is an optional uint32 flag sent under key only when given on
// the command line, so that the daemon leaves the parameter unchanged
// otherwise.
type uintFlag struct {
	flag, key, usage string
	v                uint32
}

// setParams returns the method's params: name, policy and the flags given.
func setParams(cmd *cobra.Command, name, policy string, flags []*uintFlag) map[string]any {
	params := map[string]any{"name": name, "policy": policy}
	for _, u := range flags {
		if cmd.Flags().Changed(u.flag) {
			params[u.key] = u.v
		}
	}
	return params
}

// newPolicySetCmd builds a set-* command calling method with --policy and
// the optional flags.
func newPolicySetCmd(o *clientOpts, use, short, long, example, method, kind string, policies []string, flags []*uintFlag) *cobra.Command {
	var policy string
	cmd := &cobra.Command{
		Use:     use,
		Short:   short,
		Long:    long,
		Example: example,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			what := "cache " + cmd.Name() + " " + name
			if err := checkPolicy(kind, policy, policies); err != nil {
				return fmt.Errorf("%s: --policy: %w", what, err)
			}
			return o.with(func(c *rpcclient.Client) error {
				_, err := call(c, what, method, setParams(cmd, name, policy, flags), nil)
				return err
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&policy, "policy", "", kind+" policy: "+strings.Join(policies, ", "))
	for _, u := range flags {
		f.Uint32Var(&u.v, u.flag, 0, u.usage)
	}
	cmd.MarkFlagRequired("policy") //nolint:errcheck // the flag exists
	return cmd
}

func newCacheSetSeqCutoffCmd(o *clientOpts) *cobra.Command {
	return newPolicySetCmd(o,
		"set-seqcutoff NAME --policy POLICY [--threshold-kib N] [--promotion-count N]",
		"Set the sequential cutoff of the volume NAME (bdev_ocf_set_seqcutoff)",
		`Set when sequential streams on the volume NAME bypass the cache
(bdev_ocf_set_seqcutoff): always, full (only when the cache is full; the
default) or never. A request that continues a stream (starts where it
ended, same direction) is cut off once the stream's bytes plus its own reach
--threshold-kib KiB (1..4194304, default 1). --promotion-count (1..65535,
default 8) is recorded and shown, as SPDK takes it; it does not change what
is cut off. A flag not given leaves its value unchanged. The cutoff is the
volume's own, not shared with other volumes on its cache.`,
		`  blockcache cache set-seqcutoff Cache1 --policy always --threshold-kib 512`,
		"bdev_ocf_set_seqcutoff", "sequential cutoff", seqCutoffPolicies,
		[]*uintFlag{
			{flag: "threshold-kib", key: "threshold", usage: "sequential stream threshold in KiB, 1..4194304 (default: unchanged)"},
			{flag: "promotion-count", key: "promotion_count", usage: "OCF's stream promotion count, 1..65535 (default: unchanged)"},
		})
}

func newCacheSetCleaningCmd(o *clientOpts) *cobra.Command {
	return newPolicySetCmd(o,
		"set-cleaning NAME --policy POLICY [--alru-wake-up S] [--alru-staleness-time S] [--alru-flush-max-buffers N] [--alru-activity-threshold MS] [--alru-max-dirty-ratio PCT] [--acp-wake-up MS] [--acp-flush-max-buffers N] [--max-inflight N]",
		"Set the cleaning policy of the cache under NAME (bdev_ocf_set_cleaning)",
		`Set how the cache under the volume NAME writes dirty data back to the
cores in the background (bdev_ocf_set_cleaning): alru (the default: once the
cache has been idle, the lines dirty the longest; and, busy or idle,
whenever more than --alru-max-dirty-ratio percent of the cache is dirty, the
least recently used dirty lines until it is not), acp (continuously, the
densest part of a core first) or nop (none; only eviction and flushes
clean). --max-inflight bounds the lines the cleaner and flushes write back
at once. The policy and its parameters belong to the cache, so they apply
to every volume on it. The parameters of both policies are kept whichever
is chosen; a flag not given leaves its value unchanged.`,
		`  blockcache cache set-cleaning Cache1 --policy acp --acp-wake-up 100
  blockcache cache set-cleaning Cache1 --policy alru --alru-staleness-time 30
  blockcache cache set-cleaning Cache1 --policy alru --alru-max-dirty-ratio 50`,
		"bdev_ocf_set_cleaning", "cleaning", cleaningPolicies,
		[]*uintFlag{
			{flag: "alru-wake-up", key: "alru_wake_up", usage: "alru: seconds between cleaning rounds, 0..3600 (default: unchanged)"},
			{flag: "alru-staleness-time", key: "alru_staleness_time", usage: "alru: seconds a line must have been dirty, 1..3600 (default: unchanged)"},
			{flag: "alru-flush-max-buffers", key: "alru_flush_max_buffers", usage: "alru: lines cleaned a round, 1..10000 (default: unchanged)"},
			{flag: "alru-activity-threshold", key: "alru_activity_threshold", usage: "alru: idle milliseconds before cleaning, 0..1000000 (default: unchanged)"},
			{flag: "alru-max-dirty-ratio", key: "alru_max_dirty_ratio", usage: "alru: percent of the cache that may be dirty before cleaning starts, busy or not, 0..100, 100 = off (default: unchanged)"},
			{flag: "acp-wake-up", key: "acp_wake_up", usage: "acp: milliseconds between cleaning rounds, 0..10000 (default: unchanged)"},
			{flag: "acp-flush-max-buffers", key: "acp_flush_max_buffers", usage: "acp: lines cleaned a round, 1..10000 (default: unchanged)"},
			{flag: "max-inflight", key: "max_inflight", usage: "lines the cleaner and flushes write back at once, 1..1024 (default: unchanged)"},
		})
}

func newCacheSetPromotionCmd(o *clientOpts) *cobra.Command {
	return newPolicySetCmd(o,
		"set-promotion NAME --policy POLICY [--insertion-threshold N] [--trigger-threshold PCT]",
		"Set the promotion policy of the cache under NAME (bdev_ocf_set_promotion)",
		`Set which misses the cache under the volume NAME inserts
(bdev_ocf_set_promotion): always (every one; the default) or nhit (a line on
its --insertion-threshold-th access, 2..1000, once the cache is
--trigger-threshold percent full, 0..100; below that every miss). The policy
belongs to the cache, so it applies to every volume on it. A flag not given
leaves its value unchanged.`,
		`  blockcache cache set-promotion Cache1 --policy nhit --insertion-threshold 4`,
		"bdev_ocf_set_promotion", "promotion", promotionPolicies,
		[]*uintFlag{
			{flag: "insertion-threshold", key: "insertion_threshold", usage: "nhit: insert a line on this access, 2..1000 (default: unchanged)"},
			{flag: "trigger-threshold", key: "trigger_threshold", usage: "nhit: applies from this cache occupancy in percent, 0..100 (default: unchanged)"},
		})
}

// cachePolicies is bdev_ocf_get_policies' result.
type cachePolicies struct {
	Cleaning struct {
		Policy string `json:"policy"`
		ALRU   struct {
			WakeUp            uint64 `json:"wake_up"`
			StalenessTime     uint64 `json:"staleness_time"`
			FlushMaxBuffers   uint64 `json:"flush_max_buffers"`
			ActivityThreshold uint64 `json:"activity_threshold"`
			MaxDirtyRatio     uint64 `json:"max_dirty_ratio"`
		} `json:"alru"`
		ACP struct {
			WakeUp          uint64 `json:"wake_up"`
			FlushMaxBuffers uint64 `json:"flush_max_buffers"`
		} `json:"acp"`
		MaxInflight uint64 `json:"max_inflight"`
	} `json:"cleaning"`
	Promotion struct {
		Policy string `json:"policy"`
		NHit   struct {
			InsertionThreshold uint64 `json:"insertion_threshold"`
			TriggerThreshold   uint64 `json:"trigger_threshold"`
		} `json:"nhit"`
	} `json:"promotion"`
	SeqCutoff struct {
		Policy         string `json:"policy"`
		Threshold      uint64 `json:"threshold"`
		PromotionCount uint64 `json:"promotion_count"`
	} `json:"seqcutoff"`
}

// rows are the policies as table rows: the parameter, as the set-*
// commands' flags name it, and its value with its unit.
func (p *cachePolicies) rows() [][3]string {
	n := func(v uint64, unit string) string {
		s := strconv.FormatUint(v, 10)
		if unit != "" {
			s += " " + unit
		}
		return s
	}
	c, pr, s := &p.Cleaning, &p.Promotion, &p.SeqCutoff
	return [][3]string{
		{"cleaning", "policy", c.Policy},
		{"cleaning", "alru-wake-up", n(c.ALRU.WakeUp, "s")},
		{"cleaning", "alru-staleness-time", n(c.ALRU.StalenessTime, "s")},
		{"cleaning", "alru-flush-max-buffers", n(c.ALRU.FlushMaxBuffers, "lines")},
		{"cleaning", "alru-activity-threshold", n(c.ALRU.ActivityThreshold, "ms")},
		{"cleaning", "alru-max-dirty-ratio", n(c.ALRU.MaxDirtyRatio, "%")},
		{"cleaning", "acp-wake-up", n(c.ACP.WakeUp, "ms")},
		{"cleaning", "acp-flush-max-buffers", n(c.ACP.FlushMaxBuffers, "lines")},
		{"cleaning", "max-inflight", n(c.MaxInflight, "lines")},
		{"promotion", "policy", pr.Policy},
		{"promotion", "insertion-threshold", n(pr.NHit.InsertionThreshold, "")},
		{"promotion", "trigger-threshold", n(pr.NHit.TriggerThreshold, "%")},
		{"seqcutoff", "policy", s.Policy},
		{"seqcutoff", "threshold-kib", n(s.Threshold, "KiB")},
		{"seqcutoff", "promotion-count", n(s.PromotionCount, "")},
	}
}

func newCachePoliciesCmd(o *clientOpts) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "policies NAME [--json]",
		Short: "Show the cleaning, promotion and sequential cutoff policies of NAME (bdev_ocf_get_policies)",
		Long: `Show the policies of the volume NAME (bdev_ocf_get_policies): the cleaning
and promotion policies of its cache, shared by every volume on that cache,
and its own sequential cutoff. Each row names the parameter as the
set-cleaning, set-promotion and set-seqcutoff flags do. --json prints the
RPC's result.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			return o.with(func(c *rpcclient.Client) error {
				var p cachePolicies
				raw, err := call(c, "cache policies "+name, "bdev_ocf_get_policies", map[string]string{"name": name}, &p)
				if err != nil {
					return err
				}
				if asJSON {
					return printResult(cmd.OutOrStdout(), raw)
				}
				tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 2, ' ', 0)
				fmt.Fprintln(tw, "POLICY\tPARAMETER\tVALUE")
				for _, r := range p.rows() {
					fmt.Fprintf(tw, "%s\t%s\t%s\n", r[0], r[1], r[2])
				}
				return tw.Flush()
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print bdev_ocf_get_policies' result as JSON instead of a table")
	return cmd
}
