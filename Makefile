# keygate: convenience targets around CMake. Run `make run` or `make test`
# as root on Debian 12; `deps` installs any missing packages first.

BUILD_DIR ?= build
BUILD_TYPE ?= RelWithDebInfo
JOBS ?= 2

.DEFAULT_GOAL := build
.PHONY: deps build test run clean bench soak fuzz test-asan test-tsan

deps:
	scripts/install-deps.sh

build: deps
	cmake -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE)
	cmake --build $(BUILD_DIR) -j$(JOBS)

test: build
	ctest --test-dir $(BUILD_DIR) --output-on-failure -j$(JOBS)
	KEYGATE=$(BUILD_DIR)/keygate scripts/check-deploy.sh

run: build
	BUILD_DIR=$(BUILD_DIR) scripts/run-demo.sh

clean:
	rm -rf $(BUILD_DIR)

# Benchmark keygate against nginx and HAProxy on 127.0.0.1 (see bench/README.md).
# Uses the existing binary: KEYGATE=path overrides build/keygate, DURATION=5s shortens runs.
bench:
	KEYGATE=$${KEYGATE:-$(BUILD_DIR)/keygate} bash bench/run.sh

# Soak, then drain under load (see scripts/soak.py): 64 keep-alive connections through
# a 2-thread keygate while the keys file changes every second and SIGHUPs arrive in
# bursts; then SIGTERM under load. Uses the existing binary (KEYGATE=path overrides
# build/keygate); SOAK_SECONDS sets the soak's length.
SOAK_SECONDS ?= 60
soak:
	python3 scripts/soak.py --keygate $${KEYGATE:-$(BUILD_DIR)/keygate} --seconds $(SOAK_SECONDS)

# Check the deployment artefacts (deploy/, helm/) against keygate without Docker, helm
# or a cluster: yamllint, check-config on every embedded config, ports/paths/flags/
# variables, a Helm render, and a loopback replay of the compose and Kubernetes setups
# (see scripts/check-deploy.sh). KEYGATE=path overrides the binary.
.PHONY: check-deploy
check-deploy: build
	KEYGATE=$${KEYGATE:-$(BUILD_DIR)/keygate} scripts/check-deploy.sh

# Fuzz the parsers with libFuzzer (clang-14) in build-fuzz, FUZZ_SECONDS per target
# (default 60); new inputs stay in build-fuzz/corpus, crashes in build-fuzz/crashes.
fuzz:
	FUZZ_SECONDS=$${FUZZ_SECONDS:-60} scripts/fuzz.sh

# Every test under ASan+UBSan in build-asan (Debug); see scripts/sanitize.sh.
test-asan:
	JOBS=$(JOBS) scripts/sanitize.sh asan

# The integration tests against a ThreadSanitizer build of keygate in build-tsan.
test-tsan:
	JOBS=$(JOBS) scripts/sanitize.sh tsan
