# SPDX-License-Identifier: GPL-2.0-or-later
#
# netplane: build QEMU with netplane's patches and new files, test it,
# demo it, benchmark it against upstream.  See README.md.

BUILD ?= $(CURDIR)/build
QEMU_BUILD := $(BUILD)/qemu
GUEST := $(BUILD)/guest
UPSTREAM := $(BUILD)/upstream
ASAN_BUILD := $(BUILD)/asan
NINJA ?= ninja

# One ccache serves the netplane and the upstream build: paths below
# $(BUILD) are hashed relative to the compiler's working directory, and
# build/qemu and build/upstream/qemu see their sources as ../src alike.
export CCACHE_BASEDIR := $(BUILD)
export CCACHE_NOHASHDIR := 1
export NETPLANE_BUILD := $(BUILD)

.PHONY: all deps qemu qtests guest upstream asan check check-qtest \
        check-functional check-asan demo bench series series-build patches \
        clean distclean help

all: qemu

help:
	@echo 'make               build qemu-system-x86_64 with netplane ($(QEMU_BUILD))'
	@echo 'make check         run every test (installs packages first)'
	@echo 'make demo          boot the tiny guest on netplane, traffic both ways'
	@echo 'make bench         benchmark netplane against upstream QEMU'
	@echo 'make check-asan    the dataplane stress test on an ASan build ($(ASAN_BUILD))'
	@echo 'make series        export the patch series to $(BUILD)/series'
	@echo 'make series-build  ... and build every prefix of it'
	@echo 'make patches       write the commits of $(BUILD)/src back to patches/'
	@echo 'make deps          install the Debian packages netplane needs'

deps:
	@netplane/deps.sh

$(QEMU_BUILD)/build.ninja:
	./configure

# The source tree follows patches/ and the new files on every build.
qemu: $(QEMU_BUILD)/build.ninja
	@netplane/tree.sh sync $(BUILD)/src
	flock $(BUILD)/.ninja.lock $(NINJA) -C $(QEMU_BUILD) qemu-system-x86_64
	@netplane/firmware.sh $(QEMU_BUILD)

qtests: qemu
	flock $(BUILD)/.ninja.lock $(NINJA) -C $(QEMU_BUILD) tests/qtest/qos-test

guest:
	@netplane/guest/build.sh $(GUEST)

# Upstream QEMU, the same release and configure arguments, none of
# netplane's changes: the benchmark's baseline.
upstream: $(QEMU_BUILD)/build.ninja
	@netplane/tree.sh pristine $(UPSTREAM)/src $(BUILD)/src
	@. netplane/upstream.sh && \
	    qemu_configure $(UPSTREAM)/src $(UPSTREAM)/qemu "$$(cat $(BUILD)/config.args)"
	$(NINJA) -C $(UPSTREAM)/qemu qemu-system-x86_64
	@netplane/firmware.sh $(UPSTREAM)/qemu

# netplane's QEMU built with AddressSanitizer: the same source and
# configure arguments plus --enable-asan, in a build tree of its own.
asan: $(QEMU_BUILD)/build.ninja
	@netplane/tree.sh sync $(BUILD)/src
	@. netplane/upstream.sh && \
	    qemu_configure $(BUILD)/src $(ASAN_BUILD) "$$(cat $(BUILD)/config.args) '--enable-asan'"
	flock $(BUILD)/.asan.lock $(NINJA) -C $(ASAN_BUILD) qemu-system-x86_64
	@netplane/firmware.sh $(ASAN_BUILD)

# The dataplane stress test on the ASan build.  Any report is fatal to
# QEMU (halt_on_error, abort_on_error) and is written to ASAN_LOGS, which
# fails the target even if the test did not notice.  (Files there that
# hold only ASan's warning about swapcontext, which QEMU's coroutines
# use, are no report.)
ASAN_LOGS := $(BUILD)/check-logs/asan
check-asan: asan guest
	@rm -rf $(ASAN_LOGS) && mkdir -p $(ASAN_LOGS)
	@status=0; \
	ASAN_OPTIONS=halt_on_error=1:abort_on_error=1:detect_leaks=0:log_path=$(ASAN_LOGS)/asan \
	    netplane/check.py --build $(BUILD) --only functional \
	    --qemu $(ASAN_BUILD)/qemu-system-x86_64 -k dataplane_stress || status=1; \
	reports=$$(grep -l -e '^==[0-9]*==ERROR: ' -e '^SUMMARY: ' $(ASAN_LOGS)/asan.* 2>/dev/null); \
	if [ -n "$$reports" ]; then \
	    cat $$reports; \
	    echo "check-asan: AddressSanitizer reports: $$reports"; \
	    status=1; \
	fi; \
	exit $$status

check: deps
	@$(MAKE) --no-print-directory qtests guest
	@netplane/check.py --build $(BUILD)

check-qtest: qtests
	@netplane/check.py --build $(BUILD) --only qtest

check-functional: qemu guest
	@netplane/check.py --build $(BUILD) --only functional

demo: deps
	@$(MAKE) --no-print-directory qemu guest
	@netplane/demo.py --build $(BUILD)

bench: deps
	@$(MAKE) --no-print-directory qemu upstream guest
	@netplane/bench.py --build $(BUILD) $(BENCH_ARGS)

series: $(QEMU_BUILD)/build.ninja
	@netplane/tree.sh sync $(BUILD)/src
	@netplane/tree.sh export $(BUILD)/src $(BUILD)/series

series-build: $(QEMU_BUILD)/build.ninja
	@netplane/tree.sh sync $(BUILD)/src
	@netplane/tree.sh export $(BUILD)/src $(BUILD)/series "$$(cat $(BUILD)/config.args)"

patches:
	@netplane/tree.sh refresh $(BUILD)/src

clean:
	-$(NINJA) -C $(QEMU_BUILD) clean

distclean:
	rm -rf $(BUILD)
