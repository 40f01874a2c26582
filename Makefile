# clipself: one library (pipeline/ -> build/libclipself.a), thin stages, tests and benchmarks.
#
#   make            build the library, stages and tests
#   make check      install missing dependencies, then run every test (plain and sanitized),
#                   and the numerical ones again under two more BLIS kernel sets (test-kernels)
#   make demo       install missing dependencies, then run the main job
#   make bench      performance report (against the measured FMA peak, sgemm and PyTorch)
#   make deps       install missing Debian packages (scripts/install-deps)
#
# Switches: ARCH=x86-64-v3 (the default -march: AVX2 + FMA, runs on any x86-64-v3 node; the hot
# loops that gain from it switch to AVX-512 at run time where the CPU has it), ARCH=native or any
# other -march value (a change of ARCH or of the other flags rebuilds everything);
# SAN=1 builds with AddressSanitizer + UBSan into build-san/; WERROR=1 adds -Werror; V=1 shows the compiler commands; NO_TORCH=1 leaves PyTorch out of make bench, and
# BENCH_MODELS="b16" or "eva-b16" runs one model's cases of it (default both).

SAN ?= 0
V ?= 0
Q := $(if $(filter 1,$(V)),,@)
BUILD := $(if $(filter 1,$(SAN)),build-san,build)
PYTHON ?= /usr/bin/python3
MPIRUN ?= mpirun

ARCH ?= x86-64-v3

CC := mpicc
CFLAGS := -std=c11 -D_GNU_SOURCE -O3 -march=$(ARCH) -fopenmp -g -Wall -Wextra -MMD -MP
LDLIBS := -lm
ifeq ($(WERROR),1)
CFLAGS += -Werror
endif
ifeq ($(SAN),1)
CFLAGS := $(filter-out -O3,$(CFLAGS)) -O1 -fno-omit-frame-pointer -fsanitize=address,undefined \
          -fno-sanitize-recover=undefined
LDFLAGS += -fsanitize=address,undefined
endif

# ---- dependency probes: each prints found / NOT FOUND ------------------------------------
BLIS_INC := /usr/include/x86_64-linux-gnu/blis-openmp
BLIS_LIB := /usr/lib/x86_64-linux-gnu/blis-openmp/libblis.a
define probe
$(if $(2),$(info [deps] $(1): found),$(info [deps] $(1): NOT FOUND (run: make deps)))
endef
HAVE_BLIS := $(wildcard $(BLIS_INC)/blis.h)
HAVE_HDF5 := $(shell pkg-config --exists hdf5-openmpi && echo yes)
HAVE_MPI  := $(shell command -v mpicc >/dev/null 2>&1 && echo yes)
HAVE_JPEG := $(shell pkg-config --exists libjpeg && echo yes)
HAVE_PNG  := $(shell pkg-config --exists libpng && echo yes)
HAVE_YAJL := $(shell pkg-config --exists yajl && echo yes)
HAVE_ICU  := $(shell pkg-config --exists icu-uc icu-i18n && echo yes)
HAVE_ZLIB := $(shell pkg-config --exists zlib && echo yes)
# oneDNN (libdnnl-dev: the bf16 teacher's matmul) ships no pkg-config file on Debian 12
HAVE_DNNL := $(wildcard /usr/include/oneapi/dnnl/dnnl.h)
HAVE_TORCH := $(shell $(PYTHON) -c 'import torch, torchvision, h5py' >/dev/null 2>&1 && echo yes)
ifeq ($(MAKELEVEL),0)
$(call probe,BLIS (OpenMP build) $(BLIS_INC),$(HAVE_BLIS))
$(call probe,Open MPI (mpicc),$(HAVE_MPI))
$(call probe,HDF5 parallel (hdf5-openmpi),$(HAVE_HDF5))
$(call probe,libjpeg-turbo,$(HAVE_JPEG))
$(call probe,libpng,$(HAVE_PNG))
$(call probe,yajl (JSON),$(HAVE_YAJL))
$(call probe,ICU (tokenizer: Unicode lower-casing and pattern),$(HAVE_ICU))
$(call probe,zlib (tokenizer: gzip merges file),$(HAVE_ZLIB))
$(call probe,oneDNN (bf16 teacher: libdnnl-dev),$(HAVE_DNNL))
$(call probe,PyTorch + torchvision + h5py ($(PYTHON)),$(HAVE_TORCH))
endif

PKGS := hdf5-openmpi yajl libpng libjpeg icu-uc icu-i18n zlib
CFLAGS += -isystem $(BLIS_INC) -Ipipeline $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
LDLIBS := $(BLIS_LIB) $(shell pkg-config --libs $(PKGS) 2>/dev/null) -ldnnl \
          -lpthread $(LDLIBS)

# ---- the library -------------------------------------------------------------------------
LIB_SRC := $(wildcard pipeline/*/*.c)
LIB_OBJ := $(patsubst pipeline/%.c,$(BUILD)/obj/%.o,$(LIB_SRC))
LIB := $(BUILD)/libclipself.a

STAGE_SRC := $(wildcard stages/*.c)
STAGES := $(patsubst stages/%.c,$(BUILD)/bin/%,$(STAGE_SRC))
TEST_SRC := $(wildcard tests/test_*.c)
TESTS := $(patsubst tests/%.c,$(BUILD)/tests/%,$(TEST_SRC))
TEST_SCRIPTS := $(wildcard tests/test_*.sh)
BENCH := $(BUILD)/tests/bench

all: $(LIB) $(STAGES) $(TESTS) $(BENCH)

# The compiler flags in force, rewritten only when they change: every object depends on it, so
# `make ARCH=native` after a default build (or back) recompiles instead of mixing the two
# (-Werror is left out: it changes no object).
FLAGS_STAMP := $(BUILD)/.cflags
STAMPED := $(CC) $(filter-out -Werror,$(CFLAGS)) $(LDFLAGS)
$(shell mkdir -p $(BUILD); echo '$(STAMPED)' | cmp -s - $(FLAGS_STAMP) || \
  echo '$(STAMPED)' >$(FLAGS_STAMP))

$(BUILD)/obj/%.o: pipeline/%.c $(FLAGS_STAMP)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(CFLAGS) -c $< -o $@

$(LIB): $(LIB_OBJ)
	@rm -f $@
	@$(if $(Q),echo "  AR      $@")
	$(Q)ar rcs $@ $^

$(BUILD)/bin/%: stages/%.c $(LIB) $(FLAGS_STAMP)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LINK    $@")
	$(Q)$(CC) $(CFLAGS) $< -o $@ $(LIB) $(LDFLAGS) $(LDLIBS)

$(BUILD)/tests/%: tests/%.c tests/testutil.h $(LIB) $(FLAGS_STAMP)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LINK    $@")
	$(Q)$(CC) $(CFLAGS) -Itests $< -o $@ $(LIB) $(LDFLAGS) $(LDLIBS)

# ---- fixtures from the PyTorch reference --------------------------------------------------
FIXTURES := build/fixtures
$(FIXTURES)/.done: tests/reference/vit_ref.py tests/reference/eva_ref.py tests/reference/ops_ref.py tests/reference/coco_ref.py tests/reference/image_ref.py tests/reference/contrastive_ref.py
	@mkdir -p $(FIXTURES)
	$(PYTHON) tests/reference/crops_ref.py --out $(FIXTURES)
	$(PYTHON) tests/reference/contrastive_ref.py --out $(FIXTURES)
	$(PYTHON) tests/reference/ops_ref.py --out $(FIXTURES)
	$(PYTHON) tests/reference/vit_ref.py --out $(FIXTURES)
	$(PYTHON) tests/reference/eva_ref.py --out $(FIXTURES)
	$(PYTHON) tests/reference/coco_ref.py --out $(FIXTURES)
	$(PYTHON) tests/reference/image_ref.py --out $(FIXTURES) --data tests/data
	$(PYTHON) tests/reference/text_ref.py --out $(FIXTURES) --data data
	@touch $@
$(FIXTURES)/.done: tests/reference/text_ref.py tests/reference/crops_ref.py

# ---- tests -------------------------------------------------------------------------------
.PHONY: all check test test-kernels test-san deps demo bench clean
deps:
	@scripts/install-deps

check: deps
	$(MAKE) WERROR=1 test
	$(MAKE) WERROR=1 test-kernels
	$(MAKE) WERROR=1 SAN=1 test

# The tests whose results depend on how BLIS rounds (every comparison with PyTorch or between
# rank counts), run again under BLIS's generic kernels and the CPU's SIMD set
# (scripts/test-kernels).
NUM_TESTS := $(addprefix $(BUILD)/tests/,test_ops test_vit test_eva test_contrastive test_text \
               test_checkpoint)
NUM_SCRIPTS := tests/test_stages.sh tests/test_export.sh tests/test_embed_text.sh \
               tests/test_open_vocab.sh
test-kernels: all $(FIXTURES)/.done
	@FIXTURES=$(FIXTURES) BUILD=$(BUILD) PYTHON=$(PYTHON) \
	  scripts/test-kernels $(BUILD) $(NUM_TESTS) $(NUM_SCRIPTS)

test: all $(FIXTURES)/.done
	@FIXTURES=$(FIXTURES) BUILD=$(BUILD) PYTHON=$(PYTHON) \
	  scripts/run-tests $(BUILD) $(TESTS) $(TEST_SCRIPTS)

demo: deps
	$(MAKE) all
	scripts/demo $(BUILD)

bench: $(BENCH)
	@PYTHON=$(PYTHON) NO_TORCH=$(NO_TORCH) BENCH_MODELS="$(BENCH_MODELS)" \
	  scripts/bench $(BENCH) $(BUILD)/bench.txt

clean:
	rm -rf build build-san

-include $(LIB_OBJ:.o=.d)
