# mixattn: one decoder runtime, per-layer attention (MHA / GQA / MQA / MLA).
# `make` builds ./run, `make test` runs every test, `make bench` the benchmark.

CC      ?= gcc
CXX     ?= g++
PYTHON  ?= /usr/bin/python3
# No -march: one binary for every x86-64; the kernels pick AVX2 / AVX-512 at run time.
OPT     ?= -O3 -ffp-contract=fast
CFLAGS  += -std=c11 $(OPT) -Wall -Wextra -fopenmp -I.
CXXFLAGS+= -std=c++17 $(OPT) -Wall -Wextra -I.
LDLIBS  += -lsentencepiece -lstdc++ -lpcre2-8 -lutf8proc -lcjson -lm
BUILD   ?= build

CORE_SRC := $(wildcard model/*.c) $(wildcard attention/*.c) $(wildcard kernels/*.c)
CORE_OBJ := $(patsubst %.c,$(BUILD)/%.o,$(CORE_SRC))
TOK_OBJ  := $(BUILD)/tokenizer/tokenizer.o $(BUILD)/tokenizer/hf_tokenizer.o \
            $(BUILD)/tokenizer/spm_tokenizer.o $(BUILD)/tokenizer/chat_template.o
TEXT_OBJ := $(patsubst %.c,$(BUILD)/%.o,$(wildcard text/*.c))
HDRS     := $(wildcard common/*.h model/*.h attention/*.h kernels/*.h tokenizer/*.h text/*.h)

TEST_SRC := $(wildcard tests/test_*.c)
TEST_BIN := $(patsubst tests/%.c,$(BUILD)/tests/%,$(TEST_SRC))

.PHONY: all test test-c test-py bench bench-big bench-kernels bench-tokenizers compare clean asan fresh-check fuzz fuzz-build valgrind
all: run

run: run.c $(CORE_OBJ) $(TOK_OBJ) $(TEXT_OBJ) $(HDRS)
	$(CC) $(CFLAGS) -o $@ run.c $(CORE_OBJ) $(TOK_OBJ) $(TEXT_OBJ) $(LDFLAGS) $(LDLIBS)

# The reference quantizers round each product and sum on its own (bit-equal to numpy's).
$(BUILD)/kernels/quant.o: CFLAGS += -ffp-contract=off

$(BUILD)/%.o: %.c $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c -o $@ $<

$(BUILD)/%.o: %.cpp $(HDRS)
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS) -c -o $@ $<

$(BUILD)/tests/%: tests/%.c $(wildcard tests/*.h) $(CORE_OBJ) $(TOK_OBJ) $(TEXT_OBJ) $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(CORE_OBJ) $(TOK_OBJ) $(TEXT_OBJ) $(LDFLAGS) -lcmocka $(LDLIBS)

# C unit tests (cmocka), then the Python tests (converter, parity, CLI).
test: test-c test-py

test-c: $(TEST_BIN)
	@set -e; for t in $(TEST_BIN); do echo "== $$t"; $$t; done

# The C reference quantizers as a filter, for tests/python/test_quant_c.py.
$(BUILD)/tests/quantize_rows: tests/quantize_rows.c $(CORE_OBJ) $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(CORE_OBJ) $(LDFLAGS) -lm

test-py: run $(BUILD)/tests/quantize_rows $(BUILD)/bench_prefill $(BUILD)/bench_decode $(BUILD)/bench_bandwidth $(BUILD)/bench_kernels
	$(PYTHON) -m unittest discover -s tests/python -t . -v

# The whole C suite under AddressSanitizer + UBSan, in its own build folder.
asan:
	$(MAKE) BUILD=build-asan OPT="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer" \
	  LDFLAGS="-fsanitize=address,undefined" test-c

# libFuzzer targets (tests/fuzz/fuzz_*.c), clang + ASan + UBSan, in build-fuzz/.
# `make fuzz FUZZ_SECONDS=N` runs each for N seconds from its committed seed corpus
# (new inputs go to build-fuzz/corpus/, crashes to build-fuzz/crash-*); any crash,
# leak or sanitizer report fails the target.
FUZZ_SECONDS ?= 60
FUZZ_SRC     := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_NAMES   := $(patsubst tests/fuzz/fuzz_%.c,%,$(FUZZ_SRC))
FUZZ_OPT     := -O1 -g -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined \
                -fno-omit-frame-pointer -Wno-pass-failed

fuzz-build:
	$(MAKE) BUILD=build-fuzz CC=clang CXX=clang++ OPT="$(FUZZ_OPT)" \
	  $(patsubst %,build-fuzz/fuzz_%,$(FUZZ_NAMES))

# linked by clang++: the tokenizer is C++ and UBSan's C++ runtime must come along
$(BUILD)/fuzz_%: tests/fuzz/fuzz_%.c $(CORE_OBJ) $(TOK_OBJ) $(TEXT_OBJ) $(HDRS)
	$(CC) $(CFLAGS) -c -o $@.o $<
	$(CXX) $(OPT) -fopenmp -fsanitize=fuzzer -o $@ $@.o $(CORE_OBJ) $(TOK_OBJ) $(TEXT_OBJ) $(LDFLAGS) $(LDLIBS)

fuzz: fuzz-build
	@set -e; for t in $(FUZZ_NAMES); do \
	  echo "== fuzz_$$t for $(FUZZ_SECONDS) s"; mkdir -p build-fuzz/corpus/$$t; \
	  OMP_NUM_THREADS=1 build-fuzz/fuzz_$$t -max_total_time=$(FUZZ_SECONDS) -timeout=20 \
	    -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix=build-fuzz/crash-$$t- \
	    build-fuzz/corpus/$$t tests/fuzz/corpus/$$t 2>build-fuzz/fuzz_$$t.log \
	    || { tail -n 60 build-fuzz/fuzz_$$t.log; echo "fuzz_$$t FAILED (log: build-fuzz/fuzz_$$t.log)"; exit 1; }; \
	  grep -E "^(#[0-9]+.*DONE|stat::number_of_executed_units|stat::peak_rss_mb)" build-fuzz/fuzz_$$t.log || true; \
	done

# A generation and --ppl under valgrind, from a ./run built without AVX-512 and run
# with MIXATTN_ISA=avx2
# (x86-64-v3 = AVX2 + FMA, which valgrind decodes), in build-vg/.
valgrind:
	$(MAKE) BUILD=build-vg OPT="-O2 -g -march=x86-64-v3 -ffp-contract=fast" build-vg/run
	tests/valgrind.sh build-vg/run

build-vg/run: run.c $(CORE_OBJ) $(TOK_OBJ) $(TEXT_OBJ) $(HDRS)
	$(CC) $(CFLAGS) -o $@ run.c $(CORE_OBJ) $(TOK_OBJ) $(TEXT_OBJ) $(LDFLAGS) $(LDLIBS)

$(BUILD)/bench_decode: bench/decode.c bench/bench_args.h $(CORE_OBJ) $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(CORE_OBJ) $(LDFLAGS) -lm

$(BUILD)/bench_prefill: bench/prefill.c bench/bench_args.h $(CORE_OBJ) $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(CORE_OBJ) $(LDFLAGS) -lm

# Kernel speed per weight type and instruction set (GB/s, GFLOP/s, fork/join cost).
$(BUILD)/bench_kernels: bench/kernels.c bench/stream_read.h bench/bench_args.h $(CORE_OBJ) $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(CORE_OBJ) $(LDFLAGS) -lm

bench-kernels: $(BUILD)/bench_kernels
	$(BUILD)/bench_kernels

$(BUILD)/bench_bandwidth: bench/bandwidth.c bench/stream_read.h bench/bench_args.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $<

# Speed (never in tests): random-weight models of llama2.c's and DeepSeek-V2-Lite's shapes,
# each weight type (cached in build-bench/). About 8 minutes on this project's 2-core VM.
bench: run $(BUILD)/bench_decode $(BUILD)/bench_prefill $(BUILD)/bench_bandwidth
	$(PYTHON) bench/bench.py

# Real models' shapes with random weights, written straight to their type (build-bench/,
# ~24 GB of disk): Mistral-7B in q4_0 and q8_0, TinyLlama-1.1B in bf16, DeepSeek-V2-Lite
# (MoE + MLA) in q4_0. Load time, resident memory, tok/s, fraction of the bandwidth bound
# (docs/BENCH-BIG.md; `bench/big.py --models dsv2lite_q8_0 --cold ...` for one model).
bench-big: run $(BUILD)/bench_decode $(BUILD)/bench_bandwidth
	$(PYTHON) bench/big.py

$(BUILD)/bench_tokenize: bench/tokenize.c $(TOK_OBJ) $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(TOK_OBJ) $(LDFLAGS) $(LDLIBS)

# Encode speed of the real tokenizer.json files in ../shared, C vs @huggingface/tokenizers (node).
bench-tokenizers: $(BUILD)/bench_tokenize
	$(PYTHON) bench/tokenizers.py

# Every model in weights/ side by side: table in docs/compare.md, plot in docs/compare.png.
compare: run $(BUILD)/bench_decode
	$(PYTHON) scripts/compare.py

# The README's two commands, as root in a brand-new debootstrapped Debian bookworm root
# (needs root; checks the committed HEAD). See docs/CI.md.
fresh-check:
	.ci/fresh-root

clean:
	rm -rf build build-asan build-fuzz build-vg run  # (build-bench/ keeps the generated benchmark models)
