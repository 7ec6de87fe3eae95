# tcp-log-server: one static-friendly binary, its unit tests and its wire tests.
CXX      ?= g++
CXXFLAGS ?= -O2 -g
# WERROR=-Werror turns warnings into errors (CI builds so, with g++ and, for the fuzz targets, clang).
WERROR   ?=
CXXFLAGS += -std=c++17 -Wall -Wextra $(WERROR)
LDFLAGS  ?=
PREFIX   ?= /usr/local

SERVER_OBJS := sha256.o index.o buffer.o crc32c.o journal.o notify.o
TESTS       := $(patsubst %.cpp,%,$(sort $(wildcard test/*_test.cpp)))

.PHONY: all run static test interop migrate migrate-test bench bench-deps crash-soak crash-states check-deps clean install \
        uninstall fuzz fuzz-deps fuzz-replay model-test check-sanitize forward-deps forward-test forward-bench
all: tcp-log-server

tcp-log-server: tcp-log-server.o $(SERVER_OBJS)
	$(CXX) $(CXXFLAGS) $(LDFLAGS) -o $@ $^

tcp-log-server.o: tcp-log-server.cpp json.hpp message.hpp sha256.hpp index.hpp journal.hpp status.hpp buffer.hpp recent_entries.hpp notify.hpp check_progress.hpp
sha256.o: sha256.cpp sha256.hpp
index.o: index.cpp index.hpp sha256.hpp journal.hpp status.hpp
buffer.o: buffer.cpp buffer.hpp
crc32c.o: crc32c.cpp crc32c.hpp
journal.o: journal.cpp journal.hpp status.hpp crc32c.hpp
notify.o: notify.cpp notify.hpp

run: tcp-log-server
	./tcp-log-server

# A fully static, stripped binary for a small device (README, "A static binary"): no shared
# library and no NSS. -Os and section garbage collection keep it under 1 MiB; the server never
# looks a name up, and --fatal-warnings turns glibc's link-time warning about a function that
# would need NSS (getaddrinfo, getpwnam, ...) into an error. Its objects are built apart, in
# static/, so the normal build keeps its own flags.
STATIC_CXXFLAGS ?= -Os
STATIC_OBJS := $(addprefix static/,tcp-log-server.o $(SERVER_OBJS))
static/%.o: %.cpp $(wildcard *.hpp)
	@mkdir -p static
	$(CXX) $(STATIC_CXXFLAGS) -std=c++17 -Wall -Wextra -ffunction-sections -fdata-sections -c -o $@ $<

static/tcp-log-server: $(STATIC_OBJS)
	$(CXX) $(STATIC_CXXFLAGS) -static -s -Wl,--gc-sections -Wl,--fatal-warnings -o $@ $^

static: static/tcp-log-server
	@echo "static/tcp-log-server: $$(stat -c %s $<) bytes, static and stripped"

# The binary, its manual page and its systemd unit (whose ExecStart names this BINDIR).
BINDIR  ?= $(PREFIX)/bin
MANDIR  ?= $(PREFIX)/share/man
UNITDIR ?= $(PREFIX)/lib/systemd/system
install: tcp-log-server
	install -D -m 0755 tcp-log-server $(DESTDIR)$(BINDIR)/tcp-log-server
	install -D -m 0644 tcp-log-server.1 $(DESTDIR)$(MANDIR)/man1/tcp-log-server.1
	install -d $(DESTDIR)$(UNITDIR)
	sed 's|^ExecStart=/usr/local/bin/tcp-log-server|ExecStart=$(BINDIR)/tcp-log-server|' \
	  tcp-log-server.service > $(DESTDIR)$(UNITDIR)/tcp-log-server.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/tcp-log-server.service

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/tcp-log-server $(DESTDIR)$(MANDIR)/man1/tcp-log-server.1 \
	  $(DESTDIR)$(UNITDIR)/tcp-log-server.service

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
	$(call need_package,groff,groff-base)
	$(call need_package,mandoc,mandoc)
	$(call need_package,systemd-analyze,systemd)

test/doctest_main.o: test/doctest_main.cpp | check-deps
	$(CXX) $(CXXFLAGS) -c -o $@ $<

test/%_test: test/%_test.cpp test/doctest_main.o $(SERVER_OBJS) $(wildcard test/*.hpp) json.hpp message.hpp sha256.hpp index.hpp buffer.hpp recent_entries.hpp crc32c.hpp journal.hpp status.hpp notify.hpp check_progress.hpp | check-deps
	$(CXX) $(CXXFLAGS) -I. -o $@ $< test/doctest_main.o $(SERVER_OBJS)

# Preloaded by the fault tests to make one write short (k < n bytes) at a chosen moment.
test/short_write_shim.so: test/short_write_shim.c
	$(CC) -O2 -Wall -Wextra $(WERROR) -shared -fPIC -o $@ $< -ldl

test: tcp-log-server static/tcp-log-server $(TESTS) test/short_write_shim.so fuzz-replay
	@set -e; for t in $(TESTS); do echo "== $$t"; ./$$t; done

# Long runs outside CI: ROUNDS kill -9 rounds per SYNC mode (make crash-soak ROUNDS=1000).
ROUNDS ?= 300
crash-soak: tcp-log-server test/durability_test
	ROUNDS=$(ROUNDS) sh test/crash_soak.sh

# Every crash state of the commit path under the persistence model (test/fs_model.hpp), recovered
# by the real server: the whole exploration (make test runs a bounded slice). TCP_LOG_SERVER=path
# explores another binary (or a wrapper script that execs it); SEED=<n> replays a run.
crash-states: tcp-log-server test/crash_states_test
	CRASH_STATES=full ./test/crash_states_test

# Write and read throughput over loopback; figures in the README's Performance section.
bench: tcp-log-server bench-deps
	bash test/bench.sh

# The benchmark's peer: Redis Streams, from Debian's redis-server (started by the benchmark
# itself in a temporary directory, on loopback, stopped by its pid).
bench-deps:
	$(call need_package,redis-server,redis-server)

# Drop-in checks against the real npm packages (tcp-log-client 4 and 6, pino-pretty, and the
# Node.js tcp-log-server for byte-identical storage), pinned by test/interop/package-lock.json.
# It also runs the differential test of our JSON parser against JSON.parse and
# json-stable-stringify, through test/json_canonical (FUZZ_CORPUS=dir adds a fuzz corpus to it).
interop: tcp-log-server test/json_canonical
	cd test/interop && npm ci --no-audit --no-fund && TCP_LOG_SERVER=$(CURDIR)/tcp-log-server \
	  JSON_CANONICAL=$(CURDIR)/test/json_canonical npm test

test/json_canonical: test/json_canonical.cpp json.hpp
	$(CXX) $(CXXFLAGS) -I. -o $@ $<

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

# The forwarder into NATS JetStream (doc/replication.md): its npm package (the official NATS
# client, pinned by forward/package-lock.json) installed once with npm ci. forward-test runs
# it against a three-node JetStream cluster of Debian's nats-server on loopback, through leader,
# forwarder, server and cluster failures (forward/test/forward.test.js; FORWARD_ENTRIES=n
# changes the scenario's size, FORWARD_SEED=n replays its timing). forward-bench measures it.
FORWARD_DEPS := forward/node_modules/.package-lock.json
$(FORWARD_DEPS): forward/package.json forward/package-lock.json
	cd forward && npm ci --no-audit --no-fund --loglevel=error

forward-deps:
	$(call need_package,/usr/sbin/nats-server,nats-server)

forward-test: tcp-log-server forward-deps $(FORWARD_DEPS)
	cd forward && TCP_LOG_SERVER=$(CURDIR)/tcp-log-server node --test --test-concurrency=1 test/unit.test.js test/forward.test.js

forward-bench: tcp-log-server forward-deps $(FORWARD_DEPS)
	cd forward && TCP_LOG_SERVER=$(CURDIR)/tcp-log-server node test/bench.js

# ---- Fuzzing, sanitizers and the model-based test (README, "Fuzzing and sanitizers") ---------
# The fuzz targets are libFuzzer entry points (AFL++ can drive the same ones). Built with g++,
# without libFuzzer, each one replays its corpus (seeds and every input that once found a bug)
# as part of make test; built with clang's libFuzzer, make fuzz runs each for FUZZ_SECONDS.
FUZZ_TARGETS  := json framer protocol
SERVER_SRCS   := tcp-log-server.cpp sha256.cpp index.cpp buffer.cpp crc32c.cpp journal.cpp notify.cpp
SERVER_HDRS   := json.hpp message.hpp sha256.hpp index.hpp buffer.hpp recent_entries.hpp crc32c.hpp journal.hpp \
                 status.hpp notify.hpp check_progress.hpp
fuzz_sources   = fuzz/$(1)_fuzz.cpp $(if $(filter framer,$(1)),buffer.cpp,)$(if $(filter protocol,$(1)),sha256.cpp index.cpp buffer.cpp crc32c.cpp journal.cpp notify.cpp,)
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

# The server, the unit tests, the wire tests, the model-based test and the corpus replays,
# built with ASan and UBSan (no recovery) into build/sanitize/, and run against the
# instrumented binary. Sanitizer reports go to files there too: any report fails the target,
# even one from a server process whose death no test noticed.
SAN_DIR     := build/sanitize
SAN_FLAGS   := -std=c++17 -Wall -Wextra $(WERROR) -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all
# Not here: durability_test and fault_test (kill -9 soaks and strace fault injection, slow
# under ASan, and an LD_PRELOAD shim that ASan's runtime must precede) and limits_test (it
# measures memory, which ASan changes).
SAN_TESTS   := json buffer sha256 crc32c recent_entries index journal journal_store leveldb_refusal readme wire model
SAN_OBJS    := $(patsubst %.cpp,$(SAN_DIR)/%.o,sha256.cpp index.cpp buffer.cpp crc32c.cpp journal.cpp notify.cpp)
$(SAN_DIR)/%.o: %.cpp $(SERVER_HDRS)
	@mkdir -p $(@D)
	$(CXX) $(SAN_FLAGS) -I. -c -o $@ $<
$(SAN_DIR)/tcp-log-server: $(SAN_DIR)/tcp-log-server.o $(SAN_OBJS)
	$(CXX) $(SAN_FLAGS) -o $@ $^
$(SAN_DIR)/test/doctest_main.o: test/doctest_main.cpp | check-deps
	@mkdir -p $(@D)
	$(CXX) $(SAN_FLAGS) -c -o $@ $<
$(SAN_DIR)/test/%_test: test/%_test.cpp $(SAN_DIR)/test/doctest_main.o $(SAN_OBJS) $(wildcard test/*.hpp) $(SERVER_HDRS) | check-deps
	$(CXX) $(SAN_FLAGS) -I. -o $@ $< $(SAN_DIR)/test/doctest_main.o $(SAN_OBJS)
$(SAN_DIR)/replay/%_fuzz: fuzz/%_fuzz.cpp fuzz/replay_main.cpp $(FUZZ_DEPS)
	@mkdir -p $(@D)
	$(CXX) $(SAN_FLAGS) -I. -o $@ $(call fuzz_sources,$*) fuzz/replay_main.cpp -lpthread

# Left out under the sanitizers: a wire test that bounds the server's resident memory, which
# ASan's shadow memory and quarantine make meaningless, and those that run the server under
# strace, where LeakSanitizer cannot work (it needs ptrace itself): a wire test and the journal
# test whose checkpoint strace slows down.
SAN_EXCLUDE := --test-case-exclude="*bounded server memory*,*SO_KEEPALIVE and TCP_NODELAY*,*writes wait (none refused)*"
check-sanitize: $(SAN_DIR)/tcp-log-server $(patsubst %,$(SAN_DIR)/test/%_test,$(SAN_TESTS)) \
                $(patsubst %,$(SAN_DIR)/replay/%_fuzz,$(FUZZ_TARGETS))
	@rm -rf $(SAN_DIR)/reports && mkdir -p $(SAN_DIR)/reports
	@set -e; export TCP_LOG_SERVER=$(CURDIR)/$(SAN_DIR)/tcp-log-server \
	  ASAN_OPTIONS=log_path=$(CURDIR)/$(SAN_DIR)/reports/asan:detect_leaks=1:abort_on_error=1 \
	  UBSAN_OPTIONS=log_path=$(CURDIR)/$(SAN_DIR)/reports/ubsan:print_stacktrace=1:halt_on_error=1; \
	for t in $(SAN_TESTS); do echo "== sanitized $$t"; ./$(SAN_DIR)/test/$${t}_test $(SAN_EXCLUDE); done; \
	for t in $(FUZZ_TARGETS); do echo "== sanitized fuzz corpus replay: $$t"; ./$(SAN_DIR)/replay/$${t}_fuzz fuzz/corpus/$$t; done
	@if [ -n "$$(ls $(SAN_DIR)/reports)" ]; then echo "check-sanitize: sanitizer reports:"; cat $(SAN_DIR)/reports/*; exit 1; fi
	@echo "check-sanitize: no sanitizer reports"

# The model-based protocol test at length: MODEL_SEEDS seeds of MODEL_OPS operations each
# (make test runs 4 seeds of 150); MODEL_SEED=<n> with the same MODEL_OPS replays one seed.
MODEL_SEEDS ?= 50
MODEL_OPS   ?= 400
model-test: tcp-log-server test/model_test
	MODEL_SEEDS=$(MODEL_SEEDS) MODEL_OPS=$(MODEL_OPS) ./test/model_test

clean:
	rm -rf tcp-log-server *.o test/*.o $(TESTS) test/*.so test/write_bench test/json_canonical build static
