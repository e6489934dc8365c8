# ovslab — build, test and benchmark.
#
#   make deps    system packages (Debian): Open vSwitch, iproute2, iptables, tcpdump, …
#   make test-deps  those and what only the tests use (chromium, zsh, fish, …), cargo-nextest
#   make up      build, start ovslabd in the background, bring the seed lab up, run its checks
#   make test    deps + fmt + clippy + rustdoc + every test (root tests need root: run as root)
#   make install          release binaries, the systemd unit, the seed lab, /etc/default/ovslabd,
#                         manual pages, completions, the topology schema (DESTDIR, PREFIX honoured)
#   make uninstall        the reverse (edited lab files are kept)
#   make deb              the Debian package target/debian/ovslab_<version>_<arch>.deb (cargo-deb,
#                         installed if missing; DEB_REVISION=2 makes a rebuilt package, for upgrades)
#   make generated        manual pages, completion scripts, schema and the package's unit, generated
#                         from the built binaries' own definitions into target/release/generated
#   make test-container   a real systemd in a privileged container: the .deb installed with apt,
#                         ovslabd as a service, upgraded, removed and purged
#   make soak    the crash-consistency loop for longer: ovslabd killed at random points of
#                up and down SOAK_ROUNDS times (300 by default; make test runs 30)
#   make bench   the performance table of docs/performance.md: up / no-op / down / add-one times,
#                peak memory, iperf3 throughput (BIG=20x50 by default; BIG= skips the large lab;
#                HUGE=200x50 adds the 10,000-instance lab, about ten minutes more)
#   make fuzz    each fuzz target of fuzz/ for FUZZ_SECONDS (nightly Rust and cargo-fuzz,
#                installed if missing); not part of `make test`, which needs stable only

SHELL := /bin/bash
CARGO ?= cargo
# What a lab runs on, and the tools the README's examples use inside it.
PACKAGES := openvswitch-switch openvswitch-common iproute2 iptables ipset tcpdump ethtool \
            iputils-ping netcat-openbsd procps systemd dnsmasq-base udhcpc curl keepalived
# What only the tests need beside: the package's and the manual pages' tools,
# the shells of the completion tests, the browser of the web page's tests.
TEST_PACKAGES := dpkg-dev man-db groff-base zsh fish chromium chromium-driver
RUN_DIR ?= /run/ovslab
SOCKET ?= $(RUN_DIR)/ovslabd.sock

.PHONY: all build deps test-deps test lint unit bench up down clean install uninstall test-container \
        soak fuzz generated man deb

PREFIX ?= /usr/local
DESTDIR ?=
UNIT_DIR ?= /etc/systemd/system
GEN := target/release/generated
DEB_REVISION ?= 1

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

# The tests' packages too, and cargo-nextest.
test-deps:
	@$(MAKE) --no-print-directory deps PACKAGES="$(PACKAGES) $(TEST_PACKAGES)"
	@command -v cargo-nextest >/dev/null || $(CARGO) install --locked cargo-nextest

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --no-deps --workspace --document-private-items

# Every test: unit tests, root tests against real OVS and namespaces, and the
# end-to-end lab tests driving the real ovslabd and ovslab binaries.
test: test-deps lint
	$(CARGO) build --workspace --bins
	$(CARGO) nextest run --workspace --no-fail-fast --run-ignored all

# The crash-consistency test of integration-tests/tests/crash.rs, more rounds.
SOAK_ROUNDS ?= 300
soak: test-deps
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

# Manual pages, completion scripts and the topology schema, generated by
# the built binaries from their own command-line definitions (and
# docs/topology.md, compiled in), and the unit as the package installs it.
generated:
	$(CARGO) build --release --bins
	rm -rf $(GEN)
	mkdir -p $(GEN)/man $(GEN)/completions $(GEN)/systemd
	target/release/ovslab __man $(GEN)/man
	target/release/ovslabd --man-page >$(GEN)/man/ovslabd.8
	gzip -9nk $(GEN)/man/ovslab.1 $(GEN)/man/ovslab-topology.5 $(GEN)/man/ovslabd.8
	target/release/ovslab completions bash >$(GEN)/completions/ovslab.bash
	target/release/ovslab completions zsh >$(GEN)/completions/_ovslab
	target/release/ovslab completions fish >$(GEN)/completions/ovslab.fish
	target/release/ovslab schema >$(GEN)/topology.schema.json
	sed 's|/usr/local/bin/ovslabd|/usr/sbin/ovslabd|g' systemd/ovslabd.service >$(GEN)/systemd/ovslabd.service

man: generated

# The Debian package, with cargo-deb (installed if missing) and
# dpkg-shlibdeps (dpkg-dev) for the shared-library dependencies.
deb: generated
	@dpkg-query -W -f='$${Status}' dpkg-dev 2>/dev/null | grep -q "ok installed" || \
	  $(MAKE) --no-print-directory deps PACKAGES=dpkg-dev
	@$(CARGO) deb --version >/dev/null 2>&1 || $(CARGO) install --locked cargo-deb
	$(CARGO) deb -p ovslab --no-build --dbgsym --deb-revision $(DEB_REVISION)

# Binaries to $(PREFIX)/bin, the unit, the seed lab as the one configured lab
# (an edited lab file is never overwritten), /etc/default/ovslabd (kept if
# there), the manual pages, completion scripts and schema, and the group
# `ovslab` whose members may use the API (not when installing into a
# DESTDIR: the image's own tools create it at boot).
install: generated
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(UNIT_DIR) $(DESTDIR)/etc/ovslab/labs $(DESTDIR)/etc/default \
	  $(DESTDIR)$(PREFIX)/share/man/man1 $(DESTDIR)$(PREFIX)/share/man/man5 $(DESTDIR)$(PREFIX)/share/man/man8 \
	  $(DESTDIR)$(PREFIX)/share/bash-completion/completions $(DESTDIR)$(PREFIX)/share/zsh/site-functions \
	  $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d $(DESTDIR)$(PREFIX)/share/ovslab
	install -m 0755 target/release/ovslabd target/release/ovslab $(DESTDIR)$(PREFIX)/bin/
	sed 's|/usr/local/bin/|$(PREFIX)/bin/|g' systemd/ovslabd.service >$(DESTDIR)$(UNIT_DIR)/ovslabd.service
	chmod 0644 $(DESTDIR)$(UNIT_DIR)/ovslabd.service
	[ -e $(DESTDIR)/etc/ovslab/labs/seed.yaml ] || install -m 0644 lab-topologies/seed.yaml $(DESTDIR)/etc/ovslab/labs/seed.yaml
	[ -e $(DESTDIR)/etc/default/ovslabd ] || install -m 0644 packaging/debian/default $(DESTDIR)/etc/default/ovslabd
	install -m 0644 $(GEN)/man/ovslab.1 $(DESTDIR)$(PREFIX)/share/man/man1/
	install -m 0644 $(GEN)/man/ovslab-topology.5 $(DESTDIR)$(PREFIX)/share/man/man5/
	install -m 0644 $(GEN)/man/ovslabd.8 $(DESTDIR)$(PREFIX)/share/man/man8/
	install -m 0644 $(GEN)/completions/ovslab.bash $(DESTDIR)$(PREFIX)/share/bash-completion/completions/ovslab
	install -m 0644 $(GEN)/completions/_ovslab $(DESTDIR)$(PREFIX)/share/zsh/site-functions/_ovslab
	install -m 0644 $(GEN)/completions/ovslab.fish $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d/ovslab.fish
	install -m 0644 $(GEN)/topology.schema.json $(DESTDIR)$(PREFIX)/share/ovslab/topology.schema.json
	if [ -z "$(DESTDIR)" ]; then \
	  getent group ovslab >/dev/null || groupadd --system ovslab; \
	  if [ -d /run/systemd/system ]; then systemctl daemon-reload; fi; \
	fi

uninstall:
	if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then systemctl disable --now ovslabd 2>/dev/null || true; fi
	rm -f $(DESTDIR)$(PREFIX)/bin/ovslabd $(DESTDIR)$(PREFIX)/bin/ovslab $(DESTDIR)$(UNIT_DIR)/ovslabd.service
	rm -f $(DESTDIR)$(PREFIX)/share/man/man1/ovslab.1 $(DESTDIR)$(PREFIX)/share/man/man5/ovslab-topology.5 \
	  $(DESTDIR)$(PREFIX)/share/man/man8/ovslabd.8 $(DESTDIR)$(PREFIX)/share/bash-completion/completions/ovslab \
	  $(DESTDIR)$(PREFIX)/share/zsh/site-functions/_ovslab $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d/ovslab.fish \
	  $(DESTDIR)$(PREFIX)/share/ovslab/topology.schema.json
	-rmdir $(DESTDIR)$(PREFIX)/share/ovslab 2>/dev/null
	if [ -e $(DESTDIR)/etc/ovslab/labs/seed.yaml ] && cmp -s lab-topologies/seed.yaml $(DESTDIR)/etc/ovslab/labs/seed.yaml; then \
	  rm -f $(DESTDIR)/etc/ovslab/labs/seed.yaml; fi
	if [ -e $(DESTDIR)/etc/default/ovslabd ] && cmp -s packaging/debian/default $(DESTDIR)/etc/default/ovslabd; then \
	  rm -f $(DESTDIR)/etc/default/ovslabd; fi
	-rmdir $(DESTDIR)/etc/ovslab/labs $(DESTDIR)/etc/ovslab 2>/dev/null
	if [ -z "$(DESTDIR)" ]; then \
	  getent group ovslab >/dev/null && groupdel ovslab || true; \
	  if [ -d /run/systemd/system ]; then systemctl daemon-reload; fi; \
	fi

# The package is built twice: one revision more first, for the upgrade the
# test makes (cargo-deb clears target/debian of older packages, so this
# one goes elsewhere, and before), then as DEB_REVISION (make deb).
test-container: generated
	@$(CARGO) deb --version >/dev/null 2>&1 || $(CARGO) install --locked cargo-deb
	$(CARGO) deb -p ovslab --no-build --deb-revision $$(($(DEB_REVISION) + 1)) --output target/debian-upgrade/
	$(MAKE) --no-print-directory deb
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
