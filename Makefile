# blockcache: `make test` is the one command that checks everything. It
# installs what it needs (Debian packages for the real NBD clients, the Go
# tools) on a fresh machine, so CI can run it on a clean clone.

GO        ?= go
TAGS      ?= invariants
PKGS      ?= ./...
STATICCHECK_VERSION := v0.8.2
GOBIN     := $(shell $(GO) env GOPATH)/bin
# Debian packages the end-to-end tests drive: the real NBD clients and nbdkit
# as the benchmark reference; a one-node Ceph cluster and qemu-nbd's rbd
# driver for test/ceph/run.sh; promtool (prometheus) and tmux for the
# metrics and blockcache top tests.
DEB_PKGS  := libnbd-bin qemu-utils fio nbdkit jq python3-libnbd ceph-mon ceph-osd ceph-common qemu-block-extra prometheus tmux iproute2

.PHONY: all build test deps vet staticcheck unit norace fuzz-seeds bench clean

all: build

build:
	$(GO) build -o bin/blockcache ./cmd/blockcache

# deps installs the missing Debian packages (once) and the Go modules.
deps:
	@missing=""; for p in $(DEB_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	$(GO) mod download
	@test -x $(GOBIN)/staticcheck || $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

vet:
	$(GO) vet -tags $(TAGS) $(PKGS)

staticcheck:
	$(GOBIN)/staticcheck -tags $(TAGS) $(PKGS)

# unit runs every test (unit, property, fuzz seed corpora, end-to-end) under
# the race detector with the invariants build tag on. -count=1: the
# end-to-end tests build and run the daemon binary themselves, which go
# test's result cache cannot see, so a cached pass could be stale.
unit:
	$(GO) test -race -count=1 -tags $(TAGS) -timeout 15m $(PKGS)

# norace runs the concurrency and stress tests once more without the race
# detector: the lock-free read paths (malloc's optimistic copy) are compiled
# only then, and the timing without the detector's slowdown finds other
# interleavings.
NORACE_TESTS := Torn|Concurrent|ReadHit|HeavyIO|RandomLifecycle|Racing
norace:
	$(GO) test -count=1 -tags $(TAGS) -timeout 5m -run '$(NORACE_TESTS)' ./internal/bdev/malloc ./internal/ocf ./internal/vbdev

test: deps vet staticcheck build unit norace

bench:
	$(GO) test -run '^$$' -bench . -benchmem $(PKGS)

clean:
	rm -rf bin
