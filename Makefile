# switchyard — build, run, test, bench.
#   make            optimized build/switchyard and build/switchyard-testbed
#   make run        deps + build + demo (proxy + testbed backends)
#   make test       deps + ASan/UBSan build + unit + integration tests
#   make bench      side-by-side benchmark (see docs/performance.md)
#   make lint       banned functions + clang-format check

CC       ?= cc
PKGS     := libnghttp2 libevent libevent_openssl libevent_pthreads openssl yaml-0.1 libpcre2-8
WARNINGS := -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter -Wstrict-prototypes -Wmissing-prototypes
CSTD     := -std=c11 -D_GNU_SOURCE
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lhttp_parser -lpthread -lm
INCLUDES := -Isrc

OPT_CFLAGS  := -O2 -g $(CSTD) $(WARNINGS) $(INCLUDES) $(PKG_CFLAGS) -MMD -MP
ASAN_CFLAGS := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined \
               -fno-sanitize-recover=undefined $(CSTD) $(WARNINGS) $(INCLUDES) $(PKG_CFLAGS) -MMD -MP
ASAN_LDFLAGS := -fsanitize=address,undefined

# Sources: everything under src/ belongs to the proxy except the testbed and
# main.c; the testbed links core/ and http/ only.
LIB_SRCS     := src/runtime.c $(wildcard src/*/*.c)
LIB_SRCS     := $(filter-out src/testbed/%,$(LIB_SRCS))
PROXY_SRCS   := src/main.c $(LIB_SRCS)
TESTBED_SRCS := $(wildcard src/testbed/*.c) src/core/parse.c src/core/errors.c
UNIT_SRCS    := $(wildcard tests/unit/*.c) $(LIB_SRCS)

objs = $(patsubst %.c,$(1)/obj/%.o,$(2))

.PHONY: all asan deps run test unit integration bench lint format clean
all: build/switchyard build/switchyard-testbed

# ---- optimized build ------------------------------------------------------
build/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(OPT_CFLAGS) $(CFLAGS) -c $< -o $@

build/switchyard: $(call objs,build,$(PROXY_SRCS))
	$(CC) -o $@ $^ $(LDFLAGS) $(PKG_LIBS)

build/switchyard-testbed: $(call objs,build,$(TESTBED_SRCS))
	$(CC) -o $@ $^ $(LDFLAGS) $(PKG_LIBS)

# ---- sanitizer build (tests) ------------------------------------------------
build/asan/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ASAN_CFLAGS) $(CFLAGS) -c $< -o $@

build/asan/switchyard: $(call objs,build/asan,$(PROXY_SRCS))
	$(CC) $(ASAN_LDFLAGS) -o $@ $^ $(LDFLAGS) $(PKG_LIBS)

build/asan/switchyard-testbed: $(call objs,build/asan,$(TESTBED_SRCS))
	$(CC) $(ASAN_LDFLAGS) -o $@ $^ $(LDFLAGS) $(PKG_LIBS)

build/asan/unit-tests: $(call objs,build/asan,$(UNIT_SRCS))
	$(CC) $(ASAN_LDFLAGS) -o $@ $^ $(LDFLAGS) $(PKG_LIBS)

asan: build/asan/switchyard build/asan/switchyard-testbed build/asan/unit-tests

# ---- workflows ------------------------------------------------------------------
deps:
	@scripts/deps.sh

run: deps
	@$(MAKE) --no-print-directory all
	@scripts/run-demo.sh

export ASAN_OPTIONS := abort_on_error=0:halt_on_error=1:detect_leaks=1:exitcode=99
export UBSAN_OPTIONS := print_stacktrace=1:halt_on_error=1:exitcode=98

test: deps
	@$(MAKE) --no-print-directory asan
	@$(MAKE) --no-print-directory unit integration

unit: build/asan/unit-tests
	build/asan/unit-tests

PYTEST_ARGS ?=
integration: build/asan/switchyard build/asan/switchyard-testbed
	SY_BUILD=$(CURDIR)/build/asan /usr/bin/python3 -m pytest -q -p no:cacheprovider tests/integration $(PYTEST_ARGS)

bench:
	@SY_DEPS_BENCH=1 scripts/deps.sh
	@$(MAKE) --no-print-directory all
	@scripts/bench.sh

lint:
	@scripts/lint.sh

format:
	clang-format -i $(wildcard src/*/*.c src/*/*.h src/*.c src/*.h tests/unit/*.c tests/unit/*.h)

clean:
	rm -rf build

-include $(shell find build -name '*.d' 2>/dev/null)
