# SPDX-License-Identifier: GPL-2.0-or-later
#
# netplane: build QEMU with netplane's patches and new files, test it,
# demo it, benchmark it against upstream.  See README.md.

BUILD ?= $(CURDIR)/build
QEMU_BUILD := $(BUILD)/qemu
GUEST := $(BUILD)/guest
UPSTREAM := $(BUILD)/upstream
FUZZ_BUILD := $(BUILD)/fuzz
ASAN_BUILD := $(FUZZ_BUILD)
TSAN_BUILD := $(BUILD)/tsan
USDT_BUILD := $(BUILD)/usdt
CLANG_ARGS := '--cc=ccache clang' '--cxx=ccache clang++' '--objcc=ccache clang'
NINJA ?= ninja

# One ccache serves the netplane and the upstream build: paths below
# $(BUILD) are hashed relative to the compiler's working directory, and
# build/qemu and build/upstream/qemu see their sources as ../src alike.
export CCACHE_BASEDIR := $(BUILD)
export CCACHE_NOHASHDIR := 1
export NETPLANE_BUILD := $(BUILD)

.PHONY: all deps qemu qtests guest upstream asan check check-qtest \
        check-functional check-asan fuzz check-fuzz tsan check-tsan usdt check-usdt \
        demo bench series series-build patches \
        clean distclean help

all: qemu

help:
	@echo 'make               build qemu-system-x86_64 with netplane ($(QEMU_BUILD))'
	@echo 'make check         run every test (installs packages first)'
	@echo 'make demo          boot the tiny guest on netplane, traffic both ways'
	@echo 'make bench         benchmark netplane against upstream QEMU'
	@echo 'make check-asan    qtests and the stress test with ASan, UBSan, leaks ($(ASAN_BUILD))'
	@echo 'make fuzz          fuzz virtio-net (FUZZ_SECS=3600 in all) on a libFuzzer build'
	@echo 'make check-fuzz    replay the fuzzing corpus (netplane/fuzz/)'
	@echo 'make check-tsan    the dataplane qtests on a ThreadSanitizer build'
	@echo 'make check-usdt    bpftrace scripts on USDT probes, dtrace backend ($(USDT_BUILD))'
	@echo 'make series        export the patch series to $(BUILD)/series'
	@echo 'make series-build  ... and build every prefix of it'
	@echo 'make patches       write the commits of $(BUILD)/src back to patches/'
	@echo 'make deps          install the Debian packages netplane needs'

deps:
	@netplane/deps.sh

# A first build installs what QEMU's configure needs (meson from
# bookworm-backports among them); a no-op once present.
$(QEMU_BUILD)/build.ninja:
	@netplane/deps.sh
	./configure

# The source tree follows patches/ and the new files on every build.
qemu: $(QEMU_BUILD)/build.ninja
	@netplane/tree.sh sync $(BUILD)/src
	flock $(BUILD)/.ninja.lock $(NINJA) -C $(QEMU_BUILD) qemu-system-x86_64 net/qemu-af-packet-helper
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

# $(call clang_build,DIR,CONFIGURE ARGS,NINJA TARGETS): netplane's source
# and the main build's configure arguments, with clang and ARGS, in DIR.
# clang builds no option ROMs: DIR gets the firmware of the gcc build.
define clang_build
@netplane/deps.sh clang
@netplane/tree.sh sync $(BUILD)/src
@. netplane/upstream.sh && \
    qemu_configure $(BUILD)/src $(1) "$$(cat $(BUILD)/config.args) $(CLANG_ARGS) $(2)"
flock $(1).lock $(NINJA) -C $(1) $(3)
@rm -rf $(1)/qemu-bundle && cp -as $(abspath $(QEMU_BUILD))/qemu-bundle $(1)/
endef

# netplane's QEMU with AddressSanitizer and UBSan (clang), in one build
# tree with the libFuzzer targets (--enable-fuzzing instruments it for
# coverage; the system emulator runs as usual): qemu-system-x86_64 for
# check-asan, qemu-fuzz-x86_64 for fuzz and check-fuzz.  The same source
# and configure arguments as the main build otherwise.
asan: qemu
	$(call clang_build,$(ASAN_BUILD),'--enable-fuzzing' '--enable-asan' '--enable-ubsan',qemu-system-x86_64 qemu-fuzz-x86_64)

# On the ASan/UBSan build: the dataplane stress test, and the af-packet and
# dataplane qtests (error paths, hot-unplug, netdev_add that fails), with
# leak detection.  Any report is fatal to QEMU (halt_on_error,
# abort_on_error; a leak makes it exit with an error when it quits) and
# is written to ASAN_LOGS, which fails the target even if a test did not
# notice.  Leaks that are upstream QEMU's are suppressed in
# netplane/lsan.supp, each with why.  (Files that hold only ASan's warning
# about swapcontext, which QEMU's coroutines use, are no report.)
ASAN_LOGS := $(BUILD)/check-logs/asan
check-asan: asan qtests guest
	@rm -rf $(ASAN_LOGS) && mkdir -p $(ASAN_LOGS)
	@status=0; \
	export ASAN_OPTIONS=halt_on_error=1:abort_on_error=1:detect_leaks=1:log_path=$(abspath $(ASAN_LOGS))/asan; \
	export LSAN_OPTIONS=suppressions=$(abspath netplane/lsan.supp):print_suppressions=0; \
	export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:abort_on_error=1:log_path=$(abspath $(ASAN_LOGS))/ubsan; \
	netplane/check.py --build $(BUILD) --only qtest \
	    --paths 'af-packet|virtio-net-dataplane' \
	    --qemu $(ASAN_BUILD)/qemu-system-x86_64 || status=1; \
	netplane/check.py --build $(BUILD) --only functional \
	    --qemu $(ASAN_BUILD)/qemu-system-x86_64 -k dataplane_stress || status=1; \
	reports=$$(grep -l -e '^==[0-9]*==ERROR: ' -e '^SUMMARY: ' -e 'runtime error: ' \
	    $(ASAN_LOGS)/asan.* $(ASAN_LOGS)/ubsan.* 2>/dev/null); \
	if [ -n "$$reports" ]; then \
	    cat $$reports; \
	    echo "check-asan: sanitizer reports: $$reports"; \
	    status=1; \
	fi; \
	exit $$status

# Fuzz for FUZZ_SECS seconds (default an hour) shared by the targets of
# netplane/fuzz.sh; new inputs go to
# $(BUILD)/fuzz-corpus, crashes to $(BUILD)/fuzz-crashes.
FUZZ_SECS ?= 3600
fuzz: asan
	@netplane/fuzz.sh run $(FUZZ_BUILD)/qemu-fuzz-x86_64 $(BUILD) $(FUZZ_SECS)

# Every input of netplane/fuzz/ once: no crash, no sanitizer report.
check-fuzz: asan
	@netplane/fuzz.sh replay $(FUZZ_BUILD)/qemu-fuzz-x86_64 $(BUILD)

# netplane's QEMU with ThreadSanitizer (clang).
tsan: qemu
	$(call clang_build,$(TSAN_BUILD),'--enable-tsan' '--extra-cflags=-fsanitize-blacklist=$(abspath $(BUILD))/src/tests/tsan/ignore.tsan',qemu-system-x86_64)

# The dataplane qtests (every IOThread test, with af-packet and tap) on the
# ThreadSanitizer build, upstream's suppressions plus netplane/tsan.supp
# (each entry says why).  Any report fails the target.
TSAN_LOGS := $(BUILD)/check-logs/tsan
check-tsan: tsan qtests
	@rm -rf $(TSAN_LOGS) && mkdir -p $(TSAN_LOGS)
	@cat $(BUILD)/src/tests/tsan/suppressions.tsan netplane/tsan.supp > $(TSAN_LOGS)/suppressions
	@status=0; \
	TSAN_OPTIONS=suppressions=$(abspath $(TSAN_LOGS))/suppressions:log_path=$(abspath $(TSAN_LOGS))/tsan:halt_on_error=0:exitcode=0:second_deadlock_stack=1 \
	    netplane/check.py --build $(BUILD) --only qtest --paths virtio-net-dataplane \
	    --qemu $(TSAN_BUILD)/qemu-system-x86_64 || status=1; \
	reports=$$(grep -l 'WARNING: ThreadSanitizer' $(TSAN_LOGS)/tsan.* 2>/dev/null); \
	if [ -n "$$reports" ]; then \
	    cat $$reports; \
	    echo "check-tsan: ThreadSanitizer reports: $$reports"; \
	    status=1; \
	fi; \
	exit $$status

# netplane's QEMU with the dtrace trace backend besides log (gcc, the main
# build's configure arguments otherwise): every trace event is also a USDT
# probe, for bpftrace and SystemTap (scripts/bpftrace/).
usdt: qemu
	@netplane/deps.sh usdt
	@. netplane/upstream.sh && \
	    qemu_configure $(BUILD)/src $(USDT_BUILD) "$$(cat $(BUILD)/config.args) '--enable-trace-backends=log,dtrace'"
	flock $(USDT_BUILD).lock $(NINJA) -C $(USDT_BUILD) qemu-system-x86_64
	@netplane/firmware.sh $(USDT_BUILD)

# scripts/bpftrace/ against a live guest on the USDT build.
check-usdt: usdt guest
	@NETPLANE_USDT=1 netplane/check.py --build $(BUILD) --only functional \
	    --qemu $(USDT_BUILD)/qemu-system-x86_64 -k usdt

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
