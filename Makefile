# tcp-log-server: one static-friendly binary, its unit tests and its wire tests.
CXX      ?= g++
CXXFLAGS ?= -O2 -g
# WERROR=-Werror turns warnings into errors (CI builds so, with g++ and, for the fuzz targets, clang).
WERROR   ?=
# 64-bit file offsets and time on every target: 32-bit glibc has 32-bit off_t and time_t without
# them (an index past 2 GiB, log times past January 2038). No-ops on 64-bit targets; the sources
# assert both sizes, so a build that loses them fails.
PLATFORM_FLAGS := -D_FILE_OFFSET_BITS=64 -D_TIME_BITS=64
CXXFLAGS += -std=c++17 -Wall -Wextra $(WERROR) $(PLATFORM_FLAGS)
LDFLAGS  ?=
PREFIX   ?= /usr/local
# The version, from the one place it is written (tcp-log-server.hpp), for the pkg-config file.
VERSION  := $(shell sed -n 's/.*kVersion = "\(.*\)";/\1/p' tcp-log-server.hpp)

# The library (tcp-log-server.hpp): every object but the binary's main, in one archive per build
# variant, which the binary, the tests, the examples and the fuzz targets link.
SERVER_OBJS := server.o readers.o poller.o sockets.o c_api.o metrics.o metrics_http.o store.o index.o blob_store.o \
               posix_file.o journal.o sha256.o crc32c.o buffer.o notify.o
LIB         := libtcplogserver.a
comma       := ,
# Every header of the sources, the library's and the binary's (pino_log.hpp, notify.hpp).
PUBLIC_HDRS := tcp-log-server.hpp tcp_log_server.h
SERVER_HDRS := tcp-log-server.hpp tcp_log_server.h engine.hpp connection.hpp poller.hpp sockets.hpp json.hpp message.hpp \
               metrics_http.hpp monotonic.hpp \
               sha256.hpp store.hpp index.hpp blob_store.hpp posix_file.hpp buffer.hpp recent_entries.hpp crc32c.hpp journal.hpp status.hpp notify.hpp \
               check_progress.hpp pino_log.hpp
TESTS       := $(patsubst %.cpp,%,$(sort $(wildcard test/*_test.cpp)))

.PHONY: all examples run static test test-embedded interop migrate migrate-test bench bench-deps bench-charts bench-chart-deps crash-soak crash-states check-deps clean install \
        uninstall fuzz fuzz-deps fuzz-replay model-test check-sanitize forward-deps forward-test forward-bench metrics-deps
all: tcp-log-server

$(LIB): $(SERVER_OBJS)
	rm -f $@ && $(AR) rcs $@ $^

tcp-log-server: tcp-log-server.o $(LIB)
	$(CXX) $(CXXFLAGS) $(LDFLAGS) -o $@ $^

ENGINE_HDRS := tcp-log-server.hpp engine.hpp connection.hpp poller.hpp metrics_http.hpp monotonic.hpp message.hpp json.hpp buffer.hpp \
               store.hpp index.hpp blob_store.hpp journal.hpp status.hpp recent_entries.hpp sha256.hpp
tcp-log-server.o: tcp-log-server.cpp tcp-log-server.hpp pino_log.hpp posix_file.hpp json.hpp buffer.hpp store.hpp index.hpp journal.hpp \
                  status.hpp notify.hpp check_progress.hpp crc32c.hpp sha256.hpp
server.o: server.cpp $(ENGINE_HDRS) sockets.hpp
readers.o: readers.cpp $(ENGINE_HDRS)
poller.o: poller.cpp poller.hpp
metrics.o: metrics.cpp $(ENGINE_HDRS)
metrics_http.o: metrics_http.cpp metrics_http.hpp sockets.hpp
sockets.o: sockets.cpp sockets.hpp
c_api.o: c_api.cpp tcp_log_server.h tcp-log-server.hpp
sha256.o: sha256.cpp sha256.hpp
store.o: store.cpp store.hpp index.hpp blob_store.hpp journal.hpp posix_file.hpp sha256.hpp status.hpp monotonic.hpp
index.o: index.cpp index.hpp posix_file.hpp status.hpp
blob_store.o: blob_store.cpp blob_store.hpp posix_file.hpp sha256.hpp status.hpp
posix_file.o: posix_file.cpp posix_file.hpp status.hpp
buffer.o: buffer.cpp buffer.hpp
crc32c.o: crc32c.cpp crc32c.hpp
journal.o: journal.cpp journal.hpp status.hpp crc32c.hpp posix_file.hpp monotonic.hpp
notify.o: notify.cpp notify.hpp

run: tcp-log-server
	./tcp-log-server

# Programs that embed the server (doc/embedding.md), built against the public headers alone
# (copied to build/include, as `make install` would put them) and the archive: two C++ hosts and
# a C one, compiled by cc as C11 and linked by c++ as the README says.
EXAMPLES := examples/poll_host examples/adopt_host examples/c_host
examples: $(EXAMPLES)
build/include/%: %
	@mkdir -p $(@D)
	cp $< $@
EXAMPLE_HDRS := $(addprefix build/include/,$(PUBLIC_HDRS))
examples/%_host: examples/%_host.cpp examples/host_config.hpp $(EXAMPLE_HDRS) $(LIB)
	$(CXX) $(CXXFLAGS) -Ibuild/include -o $@ $< $(LIB) -lpthread
examples/c_host.o: examples/c_host.c $(EXAMPLE_HDRS)
	$(CC) -std=c11 -Wall -Werror -Ibuild/include -c -o $@ $<
examples/c_host: examples/c_host.o $(LIB)
	$(CXX) -o $@ $< $(LIB) -lpthread

# A fully static, stripped binary for a small device (doc/operations.md, "A static binary"): no shared
# library and no NSS. -Os and section garbage collection keep it under 1 MiB; the server never
# looks a name up, and --fatal-warnings turns glibc's link-time warning about a function that
# would need NSS (getaddrinfo, getpwnam, ...) into an error. Its objects are built apart, in
# static/, so the normal build keeps its own flags.
STATIC_CXXFLAGS ?= -Os
STATIC_OBJS := $(addprefix static/,$(SERVER_OBJS))
static/%.o: %.cpp $(wildcard *.hpp)
	@mkdir -p static
	$(CXX) $(STATIC_CXXFLAGS) -std=c++17 -Wall -Wextra $(PLATFORM_FLAGS) -ffunction-sections -fdata-sections -c -o $@ $<

static/$(LIB): $(STATIC_OBJS)
	rm -f $@ && $(AR) rcs $@ $^

# terminate_handler.cpp replaces libstdc++'s verbose terminate handler, whose demangler is 49 KB.
static/tcp-log-server: static/tcp-log-server.o static/terminate_handler.o static/$(LIB)
	$(CXX) $(STATIC_CXXFLAGS) -static -s -Wl,--gc-sections -Wl,--fatal-warnings -o $@ $^

static: static/tcp-log-server
	@echo "static/tcp-log-server: $$(stat -c %s $<) bytes, static and stripped"

# The binary, its manual page and its systemd unit (whose ExecStart names this BINDIR).
BINDIR  ?= $(PREFIX)/bin
MANDIR  ?= $(PREFIX)/share/man
UNITDIR ?= $(PREFIX)/lib/systemd/system
LIBDIR     ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
install: tcp-log-server $(LIB)
	install -D -m 0755 tcp-log-server $(DESTDIR)$(BINDIR)/tcp-log-server
	install -D -m 0644 $(LIB) $(DESTDIR)$(LIBDIR)/$(LIB)
	install -D -m 0644 tcp-log-server.hpp $(DESTDIR)$(INCLUDEDIR)/tcp-log-server.hpp
	install -D -m 0644 tcp_log_server.h $(DESTDIR)$(INCLUDEDIR)/tcp_log_server.h
	install -d $(DESTDIR)$(PKGCONFIGDIR)
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(LIBDIR)|' -e 's|@INCLUDEDIR@|$(INCLUDEDIR)|' \
	  -e 's|@VERSION@|$(VERSION)|' tcp-log-server.pc.in > $(DESTDIR)$(PKGCONFIGDIR)/tcp-log-server.pc
	chmod 0644 $(DESTDIR)$(PKGCONFIGDIR)/tcp-log-server.pc
	install -D -m 0644 tcp-log-server.1 $(DESTDIR)$(MANDIR)/man1/tcp-log-server.1
	install -d $(DESTDIR)$(UNITDIR)
	sed 's|^ExecStart=/usr/local/bin/tcp-log-server|ExecStart=$(BINDIR)/tcp-log-server|' \
	  tcp-log-server.service > $(DESTDIR)$(UNITDIR)/tcp-log-server.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/tcp-log-server.service
	install -m 0644 tcp-log-server.socket $(DESTDIR)$(UNITDIR)/tcp-log-server.socket

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/tcp-log-server $(DESTDIR)$(MANDIR)/man1/tcp-log-server.1 \
	  $(DESTDIR)$(UNITDIR)/tcp-log-server.service $(DESTDIR)$(UNITDIR)/tcp-log-server.socket \
	  $(DESTDIR)$(LIBDIR)/$(LIB) \
	  $(DESTDIR)$(INCLUDEDIR)/tcp-log-server.hpp $(DESTDIR)$(INCLUDEDIR)/tcp_log_server.h \
	  $(DESTDIR)$(PKGCONFIGDIR)/tcp-log-server.pc

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

# The metrics test checks the scrape with the real Prometheus tool: promtool, from Debian's
# prometheus package (installed here, as the other test dependencies are; its service is not
# started).
metrics-deps:
	$(call need_package,promtool,prometheus)
test/metrics_test: | metrics-deps

test/doctest_main.o: test/doctest_main.cpp | check-deps
	$(CXX) $(CXXFLAGS) -c -o $@ $<

test/%_test: test/%_test.cpp test/doctest_main.o $(LIB) $(wildcard test/*.hpp) $(SERVER_HDRS) | check-deps
	$(CXX) $(CXXFLAGS) -I. -o $@ $< test/doctest_main.o $(LIB)

# Preloaded by the fault tests to make one write short (k < n bytes) at a chosen moment.
test/short_write_shim.so: test/short_write_shim.c
	$(CC) -O2 -Wall -Wextra $(WERROR) -shared -fPIC -o $@ $< -ldl

test: tcp-log-server static/tcp-log-server $(TESTS) test/short_write_shim.so fuzz-replay $(EXAMPLES)
	@set -e; for t in $(TESTS); do echo "== $$t"; ./$$t; done
	@$(MAKE) --no-print-directory test-embedded

# The end-to-end protocol tests against each example host instead of the binary (the harness
# starts TCP_LOG_SERVER): 42 of the 55. Not the cases about the binary itself: its log lines,
# flags, configuration errors and defaults (HOST), the sockets it traces with strace, and its
# memory bound.
EMBEDDED_EXCLUDE := *--help exits 0*,HOST=::1 serves*,LEVELDOWN is accepted*,a bad flag or value exits 64*,\
  a failure to start is one fatal log line*,a writer that does not read its confirmations*,\
  by default the server accepts IPv4 and IPv6*,connections are logged*,every accepted socket gets*,\
  flags win over environment*,half-close after a bad line*,invalid input is logged*,the listening log line*
# (make joins the lines above with a space, which would be part of the names after it.)
EMBEDDED_EXCLUDE := $(subst $(comma) ,$(comma),$(EMBEDDED_EXCLUDE))
test-embedded: $(EXAMPLES) test/wire_test
	@set -e; for h in $(EXAMPLES); do echo "== test/wire_test against $$h"; \
	  TCP_LOG_SERVER=$(CURDIR)/$$h ./test/wire_test --test-case-exclude="$(EMBEDDED_EXCLUDE)"; done

# Long runs outside CI: ROUNDS kill -9 rounds per SYNC mode (make crash-soak ROUNDS=1000).
ROUNDS ?= 300
crash-soak: tcp-log-server test/durability_test
	ROUNDS=$(ROUNDS) sh test/crash_soak.sh

# Every crash state of the commit path under the persistence model (test/fs_model.hpp), recovered
# by the real server: the whole exploration (make test runs a bounded slice). TCP_LOG_SERVER=path
# explores another binary (or a wrapper script that execs it); SEED=<n> replays a run.
crash-states: tcp-log-server test/crash_states_test
	CRASH_STATES=full ./test/crash_states_test

# Write and read throughput over loopback; figures in doc/performance.md. Every cell's summary
# line goes to $(BENCH_OUT)/results.txt, under a header with the commit, date and machine, and
# test/bench_charts.sh draws SVG charts of it into CHARTS_DIR (with a copy of the results):
# CHARTS_DIR=doc/charts for the charts doc/performance.md embeds. `make bench-charts
# BENCH_RESULTS=file` draws them again from a results file alone, without running anything.
BENCH_OUT     ?= build/bench
CHARTS_DIR    ?= $(BENCH_OUT)
BENCH_RESULTS ?= $(BENCH_OUT)/results.txt
bench: tcp-log-server bench-deps bench-chart-deps
	BENCH_OUT=$(BENCH_OUT) bash test/bench.sh
	bash test/bench_charts.sh $(BENCH_OUT)/results.txt $(CHARTS_DIR)

bench-charts: bench-chart-deps
	bash test/bench_charts.sh $(BENCH_RESULTS) $(CHARTS_DIR)

# The benchmark's peer: Redis Streams, from Debian's redis-server (started by the benchmark
# itself in a temporary directory, on loopback, stopped by its pid).
bench-deps:
	$(call need_package,redis-server,redis-server)

# The charts' plotter: gnuplot without X11 (its SVG terminal needs none).
bench-chart-deps:
	$(call need_package,gnuplot,gnuplot-nox)

# Drop-in checks against the real npm packages (tcp-log-client 4 and 6, pino-pretty, and the
# Node.js tcp-log-server for byte-identical storage), pinned by test/interop/package-lock.json.
# It also runs the differential test of our JSON parser against JSON.parse and
# json-stable-stringify, through test/json_canonical (FUZZ_CORPUS=dir adds a fuzz corpus to it).
interop: tcp-log-server test/json_canonical
	cd test/interop && npm ci --no-audit --no-fund && TCP_LOG_SERVER=$(CURDIR)/tcp-log-server \
	  JSON_CANONICAL=$(CURDIR)/test/json_canonical npm test

test/json_canonical: test/json_canonical.cpp json.hpp
	$(CXX) $(CXXFLAGS) -I. -o $@ $<

# Moving from the Node.js server (doc/migrating.md): make migrate BLOBS=dir LEVELDB=dir [ACCEPT_DAMAGED=1].
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

# ---- Fuzzing, sanitizers and the model-based test (doc/hacking.md) ---------
# The fuzz targets are libFuzzer entry points (AFL++ can drive the same ones). Built with g++,
# without libFuzzer, each one replays its corpus (seeds and every input that once found a bug)
# as part of make test; built with clang's libFuzzer, make fuzz runs each for FUZZ_SECONDS.
FUZZ_TARGETS  := json framer protocol
FUZZ_DEPS     := $(SERVER_HDRS) fuzz/json_reference.hpp test/protocol_model.hpp

# Each fuzz target links the library of its build variant (the protocol target drives a Server).
build/replay/%_fuzz: fuzz/%_fuzz.cpp fuzz/replay_main.cpp $(LIB) $(FUZZ_DEPS)
	@mkdir -p $(@D)
	$(CXX) $(CXXFLAGS) -I. -o $@ $< fuzz/replay_main.cpp $(LIB) -lpthread

fuzz-replay: $(patsubst %,build/replay/%_fuzz,$(FUZZ_TARGETS))
	@set -e; for t in $(FUZZ_TARGETS); do echo "== fuzz corpus replay: $$t"; ./build/replay/$${t}_fuzz fuzz/corpus/$$t; done

# libFuzzer is in Debian's clang 14: clang-14, and its runtime libraries (-fsanitize=fuzzer's
# among them) in libclang-rt-14-dev, which clang-14 only recommends.
FUZZ_CXX   ?= clang++-14
FUZZ_FLAGS := -std=c++17 -Wall -Wextra $(WERROR) $(PLATFORM_FLAGS) -g -O1 -I. -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all
fuzz-deps:
	$(call need_package,$(FUZZ_CXX),clang-14)
	$(call need_package,$$($(FUZZ_CXX) -print-runtime-dir)/libclang_rt.fuzzer-x86_64.a,libclang-rt-14-dev)

# The library for the fuzz targets: instrumented for coverage and the sanitizers, without
# libFuzzer's main (the target brings it).
FUZZ_LIB_FLAGS := $(subst -fsanitize=fuzzer$(comma),-fsanitize=fuzzer-no-link$(comma),$(FUZZ_FLAGS))
build/fuzz/obj/%.o: %.cpp $(SERVER_HDRS) | fuzz-deps
	@mkdir -p $(@D)
	$(FUZZ_CXX) $(FUZZ_LIB_FLAGS) -c -o $@ $<
build/fuzz/$(LIB): $(addprefix build/fuzz/obj/,$(SERVER_OBJS))
	rm -f $@ && $(AR) rcs $@ $^
build/fuzz/%_fuzz: fuzz/%_fuzz.cpp build/fuzz/$(LIB) $(FUZZ_DEPS) | fuzz-deps
	@mkdir -p $(@D)
	$(FUZZ_CXX) $(FUZZ_FLAGS) -o $@ $< build/fuzz/$(LIB) -lpthread

# Each target runs FUZZ_SECONDS (default 3 minutes) from its checked-in corpus; new corpus
# entries and any crashing input go to a fresh temporary directory, printed at the end.
FUZZ_SECONDS ?= 180
fuzz: $(patsubst %,build/fuzz/%_fuzz,$(FUZZ_TARGETS))
	bash fuzz/run.sh $(FUZZ_SECONDS) $(FUZZ_TARGETS)

# The server, the unit tests, the wire tests, the model-based test and the corpus replays,
# built with ASan and UBSan (no recovery) into build/sanitize/, and run against the
# instrumented binary. Sanitizer reports go to files there too: any report fails the target,
# even one from a server process whose death no test noticed. TCP_LOG_SERVER_DEEP_CHECKS: the
# loop checks its lists against every connection at the end of every pass, however many.
SAN_DIR     := build/sanitize
SAN_FLAGS   := -std=c++17 -Wall -Wextra $(WERROR) $(PLATFORM_FLAGS) -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all \
              -DTCP_LOG_SERVER_DEEP_CHECKS
# Not here: durability_test and fault_test (kill -9 soaks and strace fault injection, slow
# under ASan, and an LD_PRELOAD shim that ASan's runtime must precede) and limits_test (it
# measures memory, which ASan changes).
SAN_TESTS   := json buffer sha256 crc32c recent_entries index journal journal_store leveldb_refusal readme wire model metrics
SAN_OBJS    := $(addprefix $(SAN_DIR)/,$(SERVER_OBJS))
$(SAN_DIR)/%.o: %.cpp $(SERVER_HDRS)
	@mkdir -p $(@D)
	$(CXX) $(SAN_FLAGS) -I. -c -o $@ $<
$(SAN_DIR)/$(LIB): $(SAN_OBJS)
	rm -f $@ && $(AR) rcs $@ $^
$(SAN_DIR)/tcp-log-server: $(SAN_DIR)/tcp-log-server.o $(SAN_DIR)/$(LIB)
	$(CXX) $(SAN_FLAGS) -o $@ $^
$(SAN_DIR)/test/doctest_main.o: test/doctest_main.cpp | check-deps
	@mkdir -p $(@D)
	$(CXX) $(SAN_FLAGS) -c -o $@ $<
$(SAN_DIR)/test/%_test: test/%_test.cpp $(SAN_DIR)/test/doctest_main.o $(SAN_DIR)/$(LIB) $(wildcard test/*.hpp) $(SERVER_HDRS) | check-deps
	$(CXX) $(SAN_FLAGS) -I. -o $@ $< $(SAN_DIR)/test/doctest_main.o $(SAN_DIR)/$(LIB)
$(SAN_DIR)/test/metrics_test: | metrics-deps
$(SAN_DIR)/replay/%_fuzz: fuzz/%_fuzz.cpp fuzz/replay_main.cpp $(SAN_DIR)/$(LIB) $(FUZZ_DEPS)
	@mkdir -p $(@D)
	$(CXX) $(SAN_FLAGS) -I. -o $@ $< fuzz/replay_main.cpp $(SAN_DIR)/$(LIB) -lpthread

# Left out under the sanitizers: a wire test that bounds the server's resident memory, which
# ASan's shadow memory and quarantine make meaningless, and those that run the server under
# strace, where LeakSanitizer cannot work (it needs ptrace itself): a wire test, the journal
# test whose checkpoint strace slows down, and the metrics test of a failed checkpoint; and the
# metrics test against an example host, which check-sanitize does not build.
SAN_EXCLUDE := --test-case-exclude="*bounded server memory*,*SO_KEEPALIVE and TCP_NODELAY*,*writes wait (none refused)*,*after a failed checkpoint*,*an example host serves*"
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
	rm -rf tcp-log-server *.o *.a $(EXAMPLES) examples/*.o test/*.o $(TESTS) test/*.so test/write_bench test/json_canonical build static

# ---- Devices (doc/devices.md): static binaries for ARM and MIPS boards, and their tests under
# qemu-user. ARCH is one of armhf (32-bit ARM, Raspberry Pi OS), arm64, mips (32-bit big-endian).
# The toolchains are Debian's cross compilers, installed here as the other dependencies are.
ARCH ?=
CROSS_TRIPLE_armhf := arm-linux-gnueabihf
CROSS_TRIPLE_arm64 := aarch64-linux-gnu
CROSS_TRIPLE_mips  := mips-linux-gnu
CROSS_QEMU_armhf   := qemu-arm
CROSS_QEMU_arm64   := qemu-aarch64
CROSS_QEMU_mips    := qemu-mips
# The most a target's binary may weigh: 1 MiB, and 1.25 MiB for MIPS, whose code is larger.
CROSS_MAX_BYTES_armhf := 1048576
CROSS_MAX_BYTES_arm64 := 1048576
CROSS_MAX_BYTES_mips  := 1310720
CROSS_TRIPLE := $(CROSS_TRIPLE_$(ARCH))
CROSS_QEMU   := $(CROSS_QEMU_$(ARCH))
CROSS_CXX    := $(CROSS_TRIPLE)-g++
CROSS_DIR    := build/$(ARCH)
# -Wno-psabi: GCC notes on 32-bit ARM that C++17 passes some types as GCC 7 did not; nothing of
# ours crosses that ABI boundary (everything is linked statically, from one compiler).
CROSS_FLAGS  := -std=c++17 -Wall -Wextra -Wno-psabi $(WERROR) $(PLATFORM_FLAGS)
CROSS_LIB    := $(CROSS_DIR)/$(LIB)
CROSS_LIB_OBJS := $(addprefix $(CROSS_DIR)/obj/,$(SERVER_OBJS))

.PHONY: cross cross-deps test-cross
cross-deps:
	@if [ -z "$(CROSS_TRIPLE)" ]; then echo "make: ARCH must be armhf, arm64 or mips (make cross ARCH=armhf)"; exit 64; fi
	$(call need_package,$(CROSS_CXX),g++-$(CROSS_TRIPLE))
	$(call need_package,$(CROSS_QEMU),qemu-user)

# As the host's static build: -Os, section garbage collection, no NSS; static, not static-pie.
$(CROSS_DIR)/obj/%.o: %.cpp $(SERVER_HDRS) | cross-deps
	@mkdir -p $(@D)
	$(CROSS_CXX) -Os $(CROSS_FLAGS) -ffunction-sections -fdata-sections -c -o $@ $<

$(CROSS_LIB): $(CROSS_LIB_OBJS)
	rm -f $@ && $(CROSS_TRIPLE)-ar rcs $@ $^

$(CROSS_DIR)/tcp-log-server: $(CROSS_DIR)/obj/tcp-log-server.o $(CROSS_LIB)
	$(CROSS_CXX) -Os -static -no-pie -s -Wl,--gc-sections -Wl,--fatal-warnings -o $@ $^
	@size=$$(stat -c %s $@); max=$(CROSS_MAX_BYTES_$(ARCH)); \
	if [ $$size -gt $$max ]; then echo "make: $@ is $$size bytes, over the $$max allowed"; exit 1; fi

cross: $(CROSS_DIR)/tcp-log-server
	@echo "$<: $$(stat -c %s $<) bytes, static and stripped, for $(CROSS_TRIPLE); run it on the device, or here as $(CROSS_QEMU) $<"

# The tests of a target, built for it and run under qemu-user. A test binary runs as
# `qemu-arm test`; there is no binfmt here, so the server it starts is a wrapper script that
# runs the target's binary under qemu (TCP_LOG_SERVER, as the crash-state tests use it).
# doctest is header-only: its header is taken from the host's doctest-dev package.
CROSS_TEST_DIR := $(CROSS_DIR)/test
$(CROSS_DIR)/include/doctest/doctest.h: | check-deps
	@mkdir -p $(@D)
	ln -sf $(DOCTEST_HEADER) $@
$(CROSS_TEST_DIR)/doctest_main.o: test/doctest_main.cpp $(CROSS_DIR)/include/doctest/doctest.h | cross-deps
	@mkdir -p $(@D)
	$(CROSS_CXX) -O1 $(CROSS_FLAGS) -I$(CROSS_DIR)/include -c -o $@ $<
$(CROSS_TEST_DIR)/%_test: test/%_test.cpp $(CROSS_TEST_DIR)/doctest_main.o $(CROSS_LIB) $(wildcard test/*.hpp) $(SERVER_HDRS)
	$(CROSS_CXX) -O1 $(CROSS_FLAGS) -I. -I$(CROSS_DIR)/include -static -o $@ $< $(CROSS_TEST_DIR)/doctest_main.o $(CROSS_LIB) -lpthread
$(CROSS_DIR)/qemu-tcp-log-server: $(CROSS_DIR)/tcp-log-server
	printf '#!/bin/sh\n# The %s server under qemu-user, for the tests (make test-cross).\nexec %s %s "$$@"\n' \
	  $(ARCH) $(CROSS_QEMU) $(CURDIR)/$< > $@
	chmod +x $@

# What runs under qemu, and what does not, with the reason:
#  - unit tests: all but fs_model_test, which tests the crash-state explorer's model and its
#    reader of strace traces: a tool for the host, whose traces carry the host's O_* flags;
#  - end-to-end: the protocol (wire, first_minute, leveldb_refusal), the store and the journal
#    with its recovery (journal_store), SIGTERM and kill -9 restarts (durability), limits, the
#    model-based protocol test (CROSS_MODEL_SEEDS seeds), and the device tests;
#  - not: the tests that trace the server with strace (fault_test, crash_states_test, loop_test, and the
#    cases excluded below): strace sees qemu's own system calls, not the target's, so their
#    fault injection and traces mean nothing there; packaging_test and readme_test, which run
#    the host's make, install and man tools; metrics_test, which checks each scrape with the
#    host's promtool (Debian's prometheus package, a host tool); the cases that measure the
#    server's memory from /proc (qemu's memory is not the target's); and those that count the
#    server's system calls in an strace trace (parked connections in poll(), reader work before
#    a confirmation).
CROSS_UNIT_TESTS := buffer crc32c sha256 json journal index recent_entries notify
CROSS_E2E_TESTS  := devices wire first_minute leveldb_refusal journal_store durability limits model
CROSS_EXCLUDE    := *SO_KEEPALIVE and TCP_NODELAY*,*writes wait (none refused)*,*bounded server memory*
CROSS_EXCLUDE    := $(CROSS_EXCLUDE),memory:*,*parked out of the poll set*,*counted in a syscall trace*
# The hashing tests run once per CPU below, each with the implementation it must pick (a run
# that quietly fell back to the portable code would fail): cpu:crc32c:sha256.
CROSS_HASH_RUNS_armhf := max:armv8-crc32:armv8-sha2 cortex-a15:tables:portable
CROSS_HASH_RUNS_arm64 := max:armv8-crc32:armv8-sha2
CROSS_HASH_RUNS_mips  := 24Kf:tables:portable
CROSS_MODEL_SEEDS ?= 2
CROSS_MODEL_OPS   ?= 100
# kill -9 rounds per SYNC mode, and SIGTERM-under-load rounds (make test: 25 and 6).
CROSS_CRASH_ROUNDS    ?= 8
CROSS_SHUTDOWN_ROUNDS ?= 3
test-cross: cross-deps $(CROSS_DIR)/tcp-log-server $(CROSS_DIR)/qemu-tcp-log-server \
            $(patsubst %,$(CROSS_TEST_DIR)/%_test,$(CROSS_UNIT_TESTS) $(CROSS_E2E_TESTS))
	@set -e; export TCP_LOG_SERVER=$(CURDIR)/$(CROSS_DIR)/qemu-tcp-log-server \
	  MODEL_SEEDS=$(CROSS_MODEL_SEEDS) MODEL_OPS=$(CROSS_MODEL_OPS) TCP_LOG_SERVER_EMULATED=$(CROSS_QEMU) \
	  CRASH_ROUNDS=$(CROSS_CRASH_ROUNDS) SHUTDOWN_ROUNDS=$(CROSS_SHUTDOWN_ROUNDS); \
	for run in $(CROSS_HASH_RUNS_$(ARCH)); do \
	  cpu=$${run%%:*}; impl=$${run#*:}; \
	  for t in crc32c sha256; do \
	    echo "== $(ARCH): $$t on a $$cpu CPU, expecting $$impl (under $(CROSS_QEMU))"; \
	    QEMU_CPU=$$cpu EXPECT_CRC32C_IMPLEMENTATION=$${impl%%:*} EXPECT_SHA256_IMPLEMENTATION=$${impl#*:} \
	      $(CROSS_QEMU) ./$(CROSS_TEST_DIR)/$${t}_test; \
	  done; \
	done; \
	for t in $(filter-out crc32c sha256,$(CROSS_UNIT_TESTS)) $(CROSS_E2E_TESTS); do \
	  echo "== $(ARCH): $$t (under $(CROSS_QEMU))"; \
	  $(CROSS_QEMU) ./$(CROSS_TEST_DIR)/$${t}_test --test-case-exclude="$(CROSS_EXCLUDE)"; \
	done

# Bytes on disk per entry on ext4, btrfs and f2fs images (doc/devices.md, "Disk space per entry"):
# as root, with loop devices; not part of make test. DISK_ENTRIES, DISK_SIZES, DISK_CASES, IMAGE_MB.
.PHONY: disk-usage
disk-usage: tcp-log-server
	$(call need_package,mkfs.ext4,e2fsprogs)
	$(call need_package,mkfs.btrfs,btrfs-progs)
	$(call need_package,sload.f2fs,f2fs-tools)
	bash test/disk_usage.sh
