# Tandem: two commands on a fresh Debian machine, as root.
#   make demo   installs what it needs, builds, runs the demo on the lab
#   make test   installs what it needs, runs every check and test
SHELL := /bin/bash
CARGO ?= cargo

# Debian packages the lab, the demo and the tests use.
DEB_PACKAGES := nftables iptables iproute2 ethtool tcpdump curl iperf3 procps bind9-dnsutils nsd unbound dnsperf knot hping3 \
	mptcpize shadowsocks-libev haproxy

.PHONY: demo test deps build lint fuzz fuzz-build clean-lab bench-attack bench bench-quick

# Seconds of coverage-guided fuzzing of the Convert decoder in `make test`,
# from the RFC 8803 golden vectors (fuzz/seeds/decode) and what earlier runs
# found (fuzz/corpus/decode, not committed).
FUZZ_SECONDS ?= 60

deps:
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
	@modprobe nfnetlink_queue 2>/dev/null || true

build: deps
	$(CARGO) build --release --locked

demo: build
	./target/release/tandem demo --profile rural

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

fuzz-build:
	cd fuzz && $(CARGO) build --locked

# cargo-fuzz needs nightly-only compiler flags; RUSTC_BOOTSTRAP lets the
# machine's stable toolchain accept them (a new machine has only stable).
fuzz: fuzz-build
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	mkdir -p fuzz/corpus/decode
	cd fuzz && RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run decode corpus/decode seeds/decode -- -max_total_time=$(FUZZ_SECONDS)

# The tests that need root and namespaces are #[ignore]d (a plain `cargo
# test` without root lists them as ignored); here they run. write_fuzz_seeds
# is the one ignored for another reason (it rewrites fuzz/seeds by hand).
test: deps lint
	$(CARGO) test --locked --workspace -- --include-ignored --skip write_fuzz_seeds
	$(MAKE) fuzz
	$(MAKE) bench-quick

# Tandem against the alternatives on the lab, both profiles (~15 min each):
# bench/results/<date>-<profile>.{json,md,svg} and the README's table.
# Both profiles run even when one reports a failed measurement.
bench: build
	./target/release/tandem bench --profile rural; r=$$?; \
	./target/release/tandem bench --profile suburban && exit $$r

# The 2-minute smoke subset of `make bench` (every contender really runs;
# no timing is judged); results in target/bench-quick/.
bench-quick: deps
	$(CARGO) run --locked -q -p tandem -- bench --quick --no-readme

# The HAG under attack: goodput of a subscriber with and without floods.
bench-attack: build
	bench/hag-attack/run.sh

# Removes a lab left by an interrupted run (names: tdm, demo, bench).
clean-lab:
	-./target/release/tandem lab down --name tdm
	-./target/release/tandem lab down --name demo
	-./target/release/tandem lab down --name bench
