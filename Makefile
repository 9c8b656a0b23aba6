# switchyard — build, run, test, bench.
#   make            optimized build/switchyard and build/switchyard-testbed
#   make run        deps + build + demo (proxy + testbed backends)
#   make test       deps + ASan/UBSan build + unit tests + allocation sweep + integration tests
#   make bench      side-by-side benchmark (see docs/performance.md)
#   make bench-instr  instructions per request (callgrind)
#   make lint       banned functions + clang-format check

CC       ?= cc
PKGS     := libnghttp2 libevent libevent_openssl libevent_pthreads openssl yaml-0.1 libpcre2-8 libcares
WARNINGS := -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter -Wstrict-prototypes -Wmissing-prototypes
CSTD     := -std=c11 -D_GNU_SOURCE
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lhttp_parser -lpthread -lm
# sd_notify (systemd Type=notify: READY, RELOADING, STOPPING) through
# libsystemd when pkg-config finds it (Debian: libsystemd-dev); without it
# src/core/notify.c is a no-op. `make SY_SYSTEMD=` builds without it.
SY_SYSTEMD ?= $(shell pkg-config --exists libsystemd 2>/dev/null && echo 1)
ifeq ($(SY_SYSTEMD),1)
PKG_CFLAGS += $(shell pkg-config --cflags libsystemd) -DSY_HAVE_SYSTEMD=1
PKG_LIBS   += $(shell pkg-config --libs libsystemd)
endif
INCLUDES := -Isrc

OPT_CFLAGS  := -O2 -g $(CSTD) $(WARNINGS) $(INCLUDES) $(PKG_CFLAGS) -MMD -MP
ASAN_CFLAGS := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined \
               -fno-sanitize-recover=undefined $(CSTD) $(WARNINGS) $(INCLUDES) $(PKG_CFLAGS) -MMD -MP
ASAN_LDFLAGS := -fsanitize=address,undefined

# Sources: everything under src/ belongs to the proxy except the testbed and
# main.c; the testbed links core/ and http/ only.
LIB_SRCS     := src/runtime.c src/config_watch.c $(wildcard src/*/*.c)
LIB_SRCS     := $(filter-out src/testbed/%,$(LIB_SRCS))
PROXY_SRCS   := src/main.c $(LIB_SRCS)
TESTBED_SRCS := $(wildcard src/testbed/*.c) src/core/parse.c src/core/errors.c
UNIT_SRCS    := $(wildcard tests/unit/*.c) $(LIB_SRCS)

objs = $(patsubst %.c,$(1)/obj/%.o,$(2))

# B: the build folder (B=build-x keeps a second tree apart, e.g. for a
# helper working beside you).
B ?= build

.PHONY: all asan deps run test unit integration bench soak bench-instr fuzz fuzz-build alloc-sweep lint format clean
all: $(B)/switchyard $(B)/switchyard-testbed

# ---- optimized build ------------------------------------------------------
$(B)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(OPT_CFLAGS) $(CFLAGS) -c $< -o $@

$(B)/switchyard: $(call objs,$(B),$(PROXY_SRCS))
	$(CC) -o $@ $^ $(LDFLAGS) $(PKG_LIBS)

$(B)/switchyard-testbed: $(call objs,$(B),$(TESTBED_SRCS))
	$(CC) -o $@ $^ $(LDFLAGS) $(PKG_LIBS)

# ---- sanitizer build (tests) ------------------------------------------------
$(B)/asan/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ASAN_CFLAGS) $(CFLAGS) -c $< -o $@

$(B)/asan/switchyard: $(call objs,$(B)/asan,$(PROXY_SRCS))
	$(CC) $(ASAN_LDFLAGS) -o $@ $^ $(LDFLAGS) $(PKG_LIBS)

$(B)/asan/switchyard-testbed: $(call objs,$(B)/asan,$(TESTBED_SRCS))
	$(CC) $(ASAN_LDFLAGS) -o $@ $^ $(LDFLAGS) $(PKG_LIBS)

$(B)/asan/unit-tests: $(call objs,$(B)/asan,$(UNIT_SRCS))
	$(CC) $(ASAN_LDFLAGS) -o $@ $^ $(LDFLAGS) $(PKG_LIBS)

asan: $(B)/asan/switchyard $(B)/asan/switchyard-testbed $(B)/asan/unit-tests $(B)/asan/alloc-sweep

# ---- workflows ------------------------------------------------------------------
deps:
	@scripts/deps.sh

run: deps
	@$(MAKE) --no-print-directory all
	@scripts/run-demo.sh

export ASAN_OPTIONS := abort_on_error=0:halt_on_error=1:detect_leaks=1:exitcode=99
export UBSAN_OPTIONS := print_stacktrace=1:halt_on_error=1:exitcode=98

test: deps
	@scripts/layers.sh
	@$(MAKE) --no-print-directory asan
	@$(MAKE) --no-print-directory unit alloc-sweep integration

unit: $(B)/asan/unit-tests
	$(B)/asan/unit-tests

PYTEST_ARGS ?=
integration: $(B)/asan/switchyard $(B)/asan/switchyard-testbed
	SY_BUILD=$(CURDIR)/$(B)/asan /usr/bin/python3 -m pytest -q -p no:cacheprovider tests/integration $(PYTEST_ARGS)

bench:
	@SY_DEPS_BENCH=1 scripts/deps.sh
	@$(MAKE) --no-print-directory all
	@scripts/bench.sh

soak:   # outside CI: SY_SOAK_MINUTES (30), SY_SOAK_RELOADS (100); docs/soak.md
	@$(MAKE) --no-print-directory all
	@SY_SOAK_BUILD="$${SY_SOAK_BUILD:-$(abspath $(B))}" scripts/soak.sh

# ---- fuzzing (libFuzzer; clang and libclang-rt-14-dev) ----------------------------------
# Each tests/fuzz/fuzz_NAME.c is a target linked with the proxy's sources;
# its seed corpus is tests/fuzz/corpus/NAME/. `make fuzz` runs every target
# for SY_FUZZ_SECONDS (default 60) on a copy of its corpus; a crash, a leak
# or a sanitizer report fails the run and leaves the input in $(B)/fuzz/.
FUZZ_CC      ?= clang
FUZZ_CFLAGS  := -O1 -g -fno-omit-frame-pointer -fsanitize=fuzzer-no-link,address,undefined \
                -fno-sanitize-recover=undefined $(CSTD) $(WARNINGS) $(INCLUDES) $(PKG_CFLAGS) -MMD -MP
FUZZ_TARGETS := $(patsubst tests/fuzz/fuzz_%.c,%,$(wildcard tests/fuzz/fuzz_*.c))
SY_FUZZ_SECONDS ?= 60

$(B)/fuzz/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(CFLAGS) -c $< -o $@

# tests/fuzz/harness.c (the request path in one process, for the codec
# targets) is linked into every target; the others do not call it.
FUZZ_SHARED  := tests/fuzz/harness.c

$(B)/fuzz/fuzz_%: $(B)/fuzz/obj/tests/fuzz/fuzz_%.o $(call objs,$(B)/fuzz,$(FUZZ_SHARED) $(LIB_SRCS))
	$(FUZZ_CC) -fsanitize=fuzzer,address,undefined -o $@ $^ $(LDFLAGS) $(PKG_LIBS)

.SECONDARY: $(call objs,$(B)/fuzz,$(LIB_SRCS) $(wildcard tests/fuzz/*.c))
fuzz-build: $(addprefix $(B)/fuzz/fuzz_,$(FUZZ_TARGETS))

fuzz: deps
	@$(MAKE) --no-print-directory fuzz-build
	@scripts/fuzz.sh $(B)/fuzz $(SY_FUZZ_SECONDS) $(FUZZ_TARGETS)

# ---- allocation-failure sweep (STYLE rule 19; tests/alloc/alloc_sweep.c) ----------------
# For every N, fails the Nth allocation of the config loader, url_map_compile,
# a worker's startup and requests through the real codecs (the fuzz seeds),
# under ASan/LSan: no crash, no leak. --wrap reaches the allocations of the
# proxy's own objects (nghttp2's included, through core/mem_cache.c);
# --libevent adds libevent's. Part of `make test` (~15 s).
ALLOC_WRAP := -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc,--wrap=strdup,--wrap=strndup \
              -Wl,--wrap=aligned_alloc
ALLOC_SRCS := tests/alloc/alloc_sweep.c tests/fuzz/harness.c $(LIB_SRCS)

$(B)/asan/alloc-sweep: $(call objs,$(B)/asan,$(ALLOC_SRCS))
	$(CC) $(ASAN_LDFLAGS) $(ALLOC_WRAP) -o $@ $^ $(LDFLAGS) $(PKG_LIBS)

alloc-sweep: $(B)/asan/alloc-sweep
	$(B)/asan/alloc-sweep --libevent --corpus tests/fuzz/corpus \
	    --config config/examples/strangler.yaml --config config/demo.yaml --config config/examples/testbed.yaml

# Instructions per request under callgrind (deterministic; scripts/instr.sh).
bench-instr:
	@SY_DEPS_BENCH=1 scripts/deps.sh
	@$(MAKE) --no-print-directory all
	@scripts/instr.sh $(B)

lint:
	@scripts/lint.sh

format:
	clang-format -i $(wildcard src/*/*.c src/*/*.h src/*.c src/*.h tests/unit/*.c tests/unit/*.h)

clean:
	rm -rf $(B)

-include $(shell find $(B) -name '*.d' 2>/dev/null)
