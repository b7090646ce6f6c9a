// Package testutil holds what tests in several packages share and no
// package's own test support covers: sector stamps that name the write
// which put each sector's content in place (stamp.go), the first
// difference between two byte slices (diff.go), running the external NBD
// clients and servers the tests drive (tool.go), a throw-away CA that
// issues server, client and intermediate certificates and CRLs (ca.go)
// and writes them as NBD servers and clients read them (tlsdir.go), a
// process's open flags on a file (fdflags.go) and damaging a file in
// place (file.go).
//
// Only test files import it; internal/lint checks that.
package testutil
