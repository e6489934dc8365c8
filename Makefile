# ovslab — build, test and benchmark.
#
#   make deps    system packages (Debian): Open vSwitch, iproute2, iptables, tcpdump, …
#   make up      build, start ovslabd in the background, bring the seed lab up, run its checks
#   make test    deps + fmt + clippy + every test (root tests need root: run as root)
#   make install          release binaries, the systemd unit and the seed lab (DESTDIR, PREFIX honoured)
#   make uninstall        the reverse (edited lab files are kept)
#   make test-container   a real systemd in a privileged container runs ovslabd as a service
#   make soak    the crash-consistency loop for longer: ovslabd killed at random points of
#                up and down SOAK_ROUNDS times (300 by default; make test runs 30)
#   make bench   the performance table of docs/performance.md: up / no-op / down / add-one times,
#                peak memory, iperf3 throughput (BIG=20x50 by default; BIG= skips the large lab)
#   make fuzz    each fuzz target of fuzz/ for FUZZ_SECONDS (nightly Rust and cargo-fuzz,
#                installed if missing); not part of `make test`, which needs stable only

SHELL := /bin/bash
CARGO ?= cargo
PACKAGES := openvswitch-switch openvswitch-common iproute2 iptables ipset tcpdump ethtool \
            iputils-ping netcat-openbsd procps systemd dnsmasq-base udhcpc curl keepalived
RUN_DIR ?= /run/ovslab
SOCKET ?= $(RUN_DIR)/ovslabd.sock

.PHONY: all build deps test lint unit bench up down clean install uninstall test-container soak fuzz

PREFIX ?= /usr/local
DESTDIR ?=
UNIT_DIR ?= /etc/systemd/system

all: build

build:
	$(CARGO) build --workspace --all-targets

# Installs what the lab and its tests need, once: apt only runs when a
# package is missing. A temporary policy-rc.d keeps the packages from
# starting a system-wide Open vSwitch in the host's own namespace.
deps:
	@missing=""; for p in $(PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  guard=""; if [ ! -e /usr/sbin/policy-rc.d ]; then \
	    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && guard=1; fi; \
	  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing; \
	  rc=$$?; [ -n "$$guard" ] && rm -f /usr/sbin/policy-rc.d; [ $$rc -eq 0 ] || exit $$rc; \
	else echo "system packages: all present"; fi
	@command -v cargo-nextest >/dev/null || $(CARGO) install --locked cargo-nextest

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# Every test: unit tests, root tests against real OVS and namespaces, and the
# end-to-end lab tests driving the real ovslabd and ovslab binaries.
test: deps lint
	$(CARGO) build --workspace --bins
	$(CARGO) nextest run --workspace --no-fail-fast --run-ignored all

# The crash-consistency test of integration-tests/tests/crash.rs, more rounds.
SOAK_ROUNDS ?= 300
soak: deps
	$(CARGO) build --workspace --bins
	OVSLAB_CRASH_ROUNDS=$(SOAK_ROUNDS) $(CARGO) nextest run -p ovslab-integration-tests --test crash --run-ignored all --no-capture

# Start a daemon in the background (if none answers), bring the seed lab up,
# and show it working.
up: deps
	$(CARGO) build --release --bins
	@mkdir -p $(RUN_DIR)
	@if ! target/release/ovslab --socket $(SOCKET) status >/dev/null 2>&1; then \
	  nohup target/release/ovslabd --socket $(SOCKET) --run-dir $(RUN_DIR) >$(RUN_DIR)/ovslabd.log 2>&1 & \
	  for i in $$(seq 100); do [ -S $(SOCKET) ] && break; sleep 0.1; done; fi
	target/release/ovslab --socket $(SOCKET) up
	target/release/ovslab --socket $(SOCKET) status
	target/release/ovslab --socket $(SOCKET) check

down:
	target/release/ovslab --socket $(SOCKET) down

bench:
	$(MAKE) deps PACKAGES="$(PACKAGES) iperf3"
	$(CARGO) build --release --bins
	scripts/bench.sh

clean:
	$(CARGO) clean

# Binaries to $(PREFIX)/bin, the unit, the seed lab as the one configured lab
# (an edited lab file is never overwritten), and the group `ovslab` whose
# members may use the API (not when installing into a DESTDIR: the image's
# own tools create it at boot, see scripts/test-container.sh).
install:
	$(CARGO) build --release --bins
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(UNIT_DIR) $(DESTDIR)/etc/ovslab/labs
	install -m 0755 target/release/ovslabd target/release/ovslab $(DESTDIR)$(PREFIX)/bin/
	sed 's|/usr/local/bin/|$(PREFIX)/bin/|g' systemd/ovslabd.service >$(DESTDIR)$(UNIT_DIR)/ovslabd.service
	chmod 0644 $(DESTDIR)$(UNIT_DIR)/ovslabd.service
	[ -e $(DESTDIR)/etc/ovslab/labs/seed.yaml ] || install -m 0644 lab-topologies/seed.yaml $(DESTDIR)/etc/ovslab/labs/seed.yaml
	if [ -z "$(DESTDIR)" ]; then \
	  getent group ovslab >/dev/null || groupadd --system ovslab; \
	  if [ -d /run/systemd/system ]; then systemctl daemon-reload; fi; \
	fi

uninstall:
	if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then systemctl disable --now ovslabd 2>/dev/null || true; fi
	rm -f $(DESTDIR)$(PREFIX)/bin/ovslabd $(DESTDIR)$(PREFIX)/bin/ovslab $(DESTDIR)$(UNIT_DIR)/ovslabd.service
	if [ -e $(DESTDIR)/etc/ovslab/labs/seed.yaml ] && cmp -s lab-topologies/seed.yaml $(DESTDIR)/etc/ovslab/labs/seed.yaml; then \
	  rm -f $(DESTDIR)/etc/ovslab/labs/seed.yaml; fi
	-rmdir $(DESTDIR)/etc/ovslab/labs $(DESTDIR)/etc/ovslab 2>/dev/null
	if [ -z "$(DESTDIR)" ]; then \
	  getent group ovslab >/dev/null && groupdel ovslab || true; \
	  if [ -d /run/systemd/system ]; then systemctl daemon-reload; fi; \
	fi

test-container:
	scripts/test-container.sh

# The parsers that meet outside input, each under libFuzzer for
# FUZZ_SECONDS. Seeds come from fuzz/corpus/<target> (committed); what the
# fuzzer learns goes to fuzz/corpus-generated/<target> (ignored), and a
# crash stops the run with its input in fuzz/artifacts/<target>. The parsers
# are safe Rust, so AddressSanitizer (cargo-fuzz's default) would only halve
# the speed: FUZZ_FLAGS turns it off; overflow checks and debug assertions
# stay on. One process per target (the default), one target at a time.
FUZZ_TARGETS ?= topology ovsdb_codec openflow iptables_save netlink_replies frames
FUZZ_SECONDS ?= 60
FUZZ_FLAGS ?= --sanitizer none
fuzz:
	@rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
	@$(CARGO) fuzz --version >/dev/null 2>&1 || $(CARGO) install --locked cargo-fuzz
	cd fuzz && for t in $(FUZZ_TARGETS); do \
	  mkdir -p corpus-generated/$$t && \
	  $(CARGO) +nightly fuzz run $(FUZZ_FLAGS) $$t corpus-generated/$$t corpus/$$t -- \
	    -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 || exit 1; \
	done
