package nbd

import (
	"slices"
	"strings"
	"sync/atomic"

	"blockcache/internal/latency"
	"blockcache/internal/nbdproto"
)

// exportStats are an export's request statistics, kept from AddExport on.
// Every field is updated with atomics by the connections' goroutines.
type exportStats struct {
	// executing counts requests being executed by the device.
	executing atomic.Int64
	// lat holds the time the device took for each request, by ExportOp.
	lat [numExportOps]latency.Histogram
}

// ExportOp classes requests for the latency histograms.
type ExportOp uint8

const (
	OpRead  ExportOp = iota // NBD_CMD_READ
	OpWrite                 // NBD_CMD_WRITE
	OpOther                 // flush, trim, write-zeroes
	numExportOps
)

var exportOpNames = [numExportOps]string{"read", "write", "other"}

// String returns the op's label: read, write or other.
func (o ExportOp) String() string {
	if o < numExportOps {
		return exportOpNames[o]
	}
	return "unknown"
}

// ExportOps lists the request classes.
func ExportOps() []ExportOp { return []ExportOp{OpRead, OpWrite, OpOther} }

func opOf(typ nbdproto.Command) ExportOp {
	switch typ {
	case nbdproto.CmdRead:
		return OpRead
	case nbdproto.CmdWrite:
		return OpWrite
	}
	return OpOther
}

// ExportStats is a snapshot of one export's statistics.
type ExportStats struct {
	Name string
	// Connections is the number of clients in transmission on it.
	Connections int
	// Executing is the number of its requests the device is executing.
	Executing int64
	// Latency is the time the device took per request, by ExportOp,
	// from the request's execution to its reply being laid out (queueing
	// and the reply's trip to the client not included).
	Latency [numExportOps]latency.Snapshot
}

// ExportStats returns every export's statistics, sorted by name.
func (s *Server) ExportStats() []ExportStats {
	s.mu.Lock()
	out := make([]ExportStats, 0, len(s.mu.exports))
	exs := make([]*export, 0, len(s.mu.exports))
	for _, ex := range s.mu.exports {
		out = append(out, ExportStats{Name: ex.Name, Connections: len(ex.conns)})
		exs = append(exs, ex)
	}
	s.mu.Unlock()
	for i, ex := range exs {
		out[i].Executing = ex.stats.executing.Load()
		for op := range out[i].Latency {
			out[i].Latency[op] = ex.stats.lat[op].Snapshot()
		}
	}
	slices.SortFunc(out, func(a, b ExportStats) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Connections returns the number of open connections, in negotiation or
// transmission, all listeners together.
func (s *Server) Connections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.mu.conns)
}

// executeTimed is execute, counted in the export's executing requests and,
// when executed, timed in its latency histograms.
func (c *conn) executeTimed(j *job, try bool) (executed bool, err error) {
	st := &c.ex.stats
	st.executing.Add(1)
	defer st.executing.Add(-1)
	start := latency.Now()
	if executed, err = c.execute(j, try); executed {
		st.lat[opOf(j.req.Type)].Since(start)
	}
	return executed, err
}
