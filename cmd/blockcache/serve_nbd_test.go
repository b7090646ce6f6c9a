package main

import "testing"

// NBD bounds and an io_uring poll budget out of range are refused before
// anything starts, naming the flag.
func TestServeRefusesBadNBDBounds(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--nbd-max-connections", "0"}, "--nbd-max-connections 0: must be at least 1"},
		{[]string{"--nbd-handshake-timeout", "0s"}, "--nbd-handshake-timeout 0s: must be positive"},
		{[]string{"--nbd-payload-timeout", "-1s"}, "--nbd-payload-timeout -1s: must be positive"},
		{[]string{"--io-poll", "-1us"}, "--io-poll -1µs: must not be negative"},
		{[]string{"--nbd-max-inflight-bytes", "1048576"}, "--nbd-max-inflight-bytes 1048576: must be at least 33554432, the largest NBD request"},
	} {
		args := append([]string{"serve", "--bare", "-r", t.TempDir() + "/never.sock", "--nbd-listen", ""}, tc.args...)
		checkFails(t, args, runCLI(t, "", args...), tc.want)
	}
}
