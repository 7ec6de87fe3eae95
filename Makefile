# tcp-log-server: one static-friendly binary, its unit tests and its wire tests.
CXX      ?= g++
CXXFLAGS ?= -O2 -g
# WERROR=-Werror turns warnings into errors (CI builds so, with g++ and, for the fuzz targets, clang).
WERROR   ?=
CXXFLAGS += -std=c++17 -Wall -Wextra $(WERROR)
LDFLAGS  ?=
PREFIX   ?= /usr/local

SERVER_OBJS := sha256.o index.o buffer.o
TESTS       := $(patsubst %.cpp,%,$(sort $(wildcard test/*_test.cpp)))

.PHONY: all run test interop migrate migrate-test bench crash-soak check-deps clean install \
        fuzz fuzz-deps fuzz-replay model-test
all: tcp-log-server

tcp-log-server: tcp-log-server.o $(SERVER_OBJS)
	$(CXX) $(CXXFLAGS) $(LDFLAGS) -o $@ $^

tcp-log-server.o: tcp-log-server.cpp json.hpp message.hpp sha256.hpp index.hpp buffer.hpp recent_entries.hpp
sha256.o: sha256.cpp sha256.hpp
index.o: index.cpp index.hpp sha256.hpp
buffer.o: buffer.cpp buffer.hpp

run: tcp-log-server
	./tcp-log-server

install: tcp-log-server
	install -D -m 0755 tcp-log-server $(DESTDIR)$(PREFIX)/bin/tcp-log-server

# Test tools come from Debian packages. As root they are installed here, so that
# `make test` passes on a fresh machine; otherwise we stop with the command to run.
DOCTEST_HEADER := /usr/include/doctest/doctest.h
define need_package # $(1): file or command that must exist, $(2): Debian package
	@if [ ! -e "$(1)" ] && ! command -v "$(1)" >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "make: $(1) is missing; installing Debian package $(2) with apt-get"; \
	    (apt-get install -y -qq $(2) >/dev/null 2>&1 || \
	     (apt-get update -qq && apt-get install -y -qq $(2))) || exit 1; \
	  else \
	    echo "make: $(1) is missing; run: sudo apt-get update && sudo apt-get install -y $(2)"; exit 1; \
	  fi; \
	fi
endef

check-deps:
	$(call need_package,$(DOCTEST_HEADER),doctest-dev)
	$(call need_package,/bin/nc.openbsd,netcat-openbsd)
	$(call need_package,strace,strace)

test/doctest_main.o: test/doctest_main.cpp | check-deps
	$(CXX) $(CXXFLAGS) -c -o $@ $<

test/%_test: test/%_test.cpp test/doctest_main.o $(SERVER_OBJS) $(wildcard test/*.hpp) json.hpp message.hpp sha256.hpp index.hpp buffer.hpp recent_entries.hpp | check-deps
	$(CXX) $(CXXFLAGS) -I. -o $@ $< test/doctest_main.o $(SERVER_OBJS)

# Preloaded by the fault tests to make one write short (k < n bytes) at a chosen moment.
test/short_write_shim.so: test/short_write_shim.c
	$(CC) -O2 -Wall -Wextra $(WERROR) -shared -fPIC -o $@ $< -ldl

test: tcp-log-server $(TESTS) test/short_write_shim.so fuzz-replay
	@set -e; for t in $(TESTS); do echo "== $$t"; ./$$t; done

# Long runs outside CI: ROUNDS kill -9 rounds per SYNC mode (make crash-soak ROUNDS=1000).
ROUNDS ?= 300
crash-soak: tcp-log-server test/durability_test
	ROUNDS=$(ROUNDS) sh test/crash_soak.sh

# Write and read throughput over loopback; figures in the README's Performance section.
bench: tcp-log-server
	bash test/bench.sh

# Drop-in checks against the real npm packages (tcp-log-client 4 and 6, pino-pretty, and the
# Node.js tcp-log-server for byte-identical storage), pinned by test/interop/package-lock.json.
interop: tcp-log-server
	cd test/interop && npm ci --no-audit --no-fund && TCP_LOG_SERVER=$(CURDIR)/tcp-log-server npm test

# Moving from the Node.js server (README): make migrate BLOBS=dir LEVELDB=dir [ACCEPT_DAMAGED=1].
# The variables reach the tool through its environment, so any directory name works unquoted;
# relative names are taken from the directory make runs in. Its npm packages (the LevelDB
# reader, pinned by migrate/package-lock.json) are installed here once, with npm ci.
MIGRATE_DEPS := migrate/node_modules/.package-lock.json
$(MIGRATE_DEPS): migrate/package.json migrate/package-lock.json
	cd migrate && npm ci --no-audit --no-fund --loglevel=error

migrate: $(MIGRATE_DEPS)
	@node migrate/migrate.js

# The migration end to end against the real Node.js servers 6, 9 and 10 (test/interop/migrate.test.js).
INTEROP_DEPS := test/interop/node_modules/.package-lock.json
$(INTEROP_DEPS): test/interop/package.json test/interop/package-lock.json
	cd test/interop && npm ci --no-audit --no-fund --loglevel=error

migrate-test: tcp-log-server $(MIGRATE_DEPS) $(INTEROP_DEPS)
	cd test/interop && TCP_LOG_SERVER=$(CURDIR)/tcp-log-server npm run --silent test:migrate

# ---- Fuzzing, sanitizers and the model-based test (README, "Fuzzing and sanitizers") ---------
# The fuzz targets are libFuzzer entry points (AFL++ can drive the same ones). Built with g++,
# without libFuzzer, each one replays its corpus (seeds and every input that once found a bug)
# as part of make test; built with clang's libFuzzer, make fuzz runs each for FUZZ_SECONDS.
FUZZ_TARGETS  := json framer protocol
SERVER_SRCS   := tcp-log-server.cpp sha256.cpp index.cpp buffer.cpp
SERVER_HDRS   := json.hpp message.hpp sha256.hpp index.hpp buffer.hpp recent_entries.hpp
fuzz_sources   = fuzz/$(1)_fuzz.cpp $(if $(filter framer,$(1)),buffer.cpp,)$(if $(filter protocol,$(1)),sha256.cpp index.cpp buffer.cpp,)
FUZZ_DEPS     := $(SERVER_SRCS) $(SERVER_HDRS) fuzz/json_reference.hpp test/protocol_model.hpp

build/replay/%_fuzz: fuzz/%_fuzz.cpp fuzz/replay_main.cpp $(FUZZ_DEPS)
	@mkdir -p $(@D)
	$(CXX) $(CXXFLAGS) -I. -o $@ $(call fuzz_sources,$*) fuzz/replay_main.cpp -lpthread

fuzz-replay: $(patsubst %,build/replay/%_fuzz,$(FUZZ_TARGETS))
	@set -e; for t in $(FUZZ_TARGETS); do echo "== fuzz corpus replay: $$t"; ./build/replay/$${t}_fuzz fuzz/corpus/$$t; done

# libFuzzer is in Debian's clang 14: clang-14, and its runtime libraries (-fsanitize=fuzzer's
# among them) in libclang-rt-14-dev, which clang-14 only recommends.
FUZZ_CXX   ?= clang++-14
FUZZ_FLAGS := -std=c++17 -Wall -Wextra $(WERROR) -g -O1 -I. -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all
fuzz-deps:
	$(call need_package,$(FUZZ_CXX),clang-14)
	$(call need_package,$$($(FUZZ_CXX) -print-runtime-dir)/libclang_rt.fuzzer-x86_64.a,libclang-rt-14-dev)

build/fuzz/%_fuzz: fuzz/%_fuzz.cpp $(FUZZ_DEPS) | fuzz-deps
	@mkdir -p $(@D)
	$(FUZZ_CXX) $(FUZZ_FLAGS) -o $@ $(call fuzz_sources,$*) -lpthread

# Each target runs FUZZ_SECONDS (default 3 minutes) from its checked-in corpus; new corpus
# entries and any crashing input go to a fresh temporary directory, printed at the end.
FUZZ_SECONDS ?= 180
fuzz: $(patsubst %,build/fuzz/%_fuzz,$(FUZZ_TARGETS))
	bash fuzz/run.sh $(FUZZ_SECONDS) $(FUZZ_TARGETS)

# The model-based protocol test at length: MODEL_SEEDS seeds of MODEL_OPS operations each
# (make test runs 4 seeds of 150); MODEL_SEED=<n> with the same MODEL_OPS replays one seed.
MODEL_SEEDS ?= 50
MODEL_OPS   ?= 400
model-test: tcp-log-server test/model_test
	MODEL_SEEDS=$(MODEL_SEEDS) MODEL_OPS=$(MODEL_OPS) ./test/model_test

clean:
	rm -rf tcp-log-server *.o test/*.o $(TESTS) test/*.so test/write_bench build
