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
HDRS     := $(wildcard common/*.h model/*.h attention/*.h kernels/*.h tokenizer/*.h)

TEST_SRC := $(wildcard tests/test_*.c)
TEST_BIN := $(patsubst tests/%.c,$(BUILD)/tests/%,$(TEST_SRC))

.PHONY: all test test-c test-py bench bench-kernels bench-tokenizers compare clean asan fresh-check
all: run

run: run.c $(CORE_OBJ) $(TOK_OBJ) $(HDRS)
	$(CC) $(CFLAGS) -o $@ run.c $(CORE_OBJ) $(TOK_OBJ) $(LDFLAGS) $(LDLIBS)

# The reference quantizers round each product and sum on its own (bit-equal to numpy's).
$(BUILD)/kernels/quant.o: CFLAGS += -ffp-contract=off

$(BUILD)/%.o: %.c $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c -o $@ $<

$(BUILD)/%.o: %.cpp $(HDRS)
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS) -c -o $@ $<

$(BUILD)/tests/%: tests/%.c $(wildcard tests/*.h) $(CORE_OBJ) $(TOK_OBJ) $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(CORE_OBJ) $(TOK_OBJ) $(LDFLAGS) -lcmocka $(LDLIBS)

# C unit tests (cmocka), then the Python tests (converter, parity, CLI).
test: test-c test-py

test-c: $(TEST_BIN)
	@set -e; for t in $(TEST_BIN); do echo "== $$t"; $$t; done

# The C reference quantizers as a filter, for tests/python/test_quant_c.py.
$(BUILD)/tests/quantize_rows: tests/quantize_rows.c $(CORE_OBJ) $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(CORE_OBJ) $(LDFLAGS) -lm

test-py: run $(BUILD)/tests/quantize_rows
	$(PYTHON) -m unittest discover -s tests/python -t . -v

# The whole C suite under AddressSanitizer + UBSan, in its own build folder.
asan:
	$(MAKE) BUILD=build-asan OPT="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer" \
	  LDFLAGS="-fsanitize=address,undefined" test-c

$(BUILD)/bench_decode: bench/decode.c $(CORE_OBJ) $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(CORE_OBJ) $(LDFLAGS) -lm

# Kernel speed per weight type and instruction set (GB/s, GFLOP/s, fork/join cost).
$(BUILD)/bench_kernels: bench/kernels.c $(CORE_OBJ) $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(CORE_OBJ) $(LDFLAGS) -lm

bench-kernels: $(BUILD)/bench_kernels
	$(BUILD)/bench_kernels

# Speed (never in tests): random-weight models of llama2.c's and DeepSeek-V2-Lite's shapes.
bench: run $(BUILD)/bench_decode
	$(PYTHON) bench/bench.py

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
	rm -rf build build-asan run  # (build-bench/ keeps the generated benchmark models)
