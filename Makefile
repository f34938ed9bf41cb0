# Kiln's entry points. Each target installs what is missing, configures and builds incrementally,
# then runs. `make demo` is the main job; `make test` builds and passes every test.
BUILD ?= build
SANITIZE_BUILD ?= build-sanitize
TSAN_BUILD ?= build-tsan
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=

.PHONY: all deps build demo test bench sanitize tsan clean

all: build

deps:
	@bash scripts/install-deps.sh

$(BUILD)/CMakeCache.txt: | deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS) >/dev/null

build: deps $(BUILD)/CMakeCache.txt
	@cmake --build $(BUILD) -j $(JOBS)

# Only what the demo runs: the library, the demo and the kiln tool (a first run skips the tests).
demo: deps $(BUILD)/CMakeCache.txt
	@cmake --build $(BUILD) -j $(JOBS) --target demo kiln_cli
	@$(BUILD)/demo

# Also: the Python venv for the interop tests (safetensors, tensorboard; they skip without it),
# and a bounded libFuzzer run of the checkpoint readers (about a minute per reader).
test: build
	@KILN_PYENV=$(abspath $(BUILD))/pyenv bash scripts/install-python-deps.sh
	@cd $(BUILD) && KILN_PYENV=$(abspath $(BUILD))/pyenv ctest --output-on-failure -j $(JOBS)
	@KILN_FUZZ_LIB_BUILD=$(BUILD) bash scripts/run-fuzz.sh 60

# The PyTorch/Lightning references come from build/torch-venv (scripts/make-torch-venv.sh, from
# PyPI); without network they are skipped and run.sh says so.
bench: deps
	@cmake -S . -B $(BUILD) -DKILN_BUILD_BENCH=ON >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)
	@KILN_TORCH_VENV=$(abspath $(BUILD))/torch-venv bash scripts/make-torch-venv.sh || \
	  echo "kiln: could not make the torch venv; the PyTorch references will be skipped"
	@bash bench/run.sh $(BUILD)

# The whole test suite under AddressSanitizer + UndefinedBehaviorSanitizer: any report fails.
# -O1, as the sanitizers' docs suggest: kernels/cpu/binary.cpp compiles in 60 s instead of 90 at -O2.
sanitize: deps
	@cmake -S . -B $(SANITIZE_BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g -DNDEBUG" \
	  -DKILN_SANITIZE=ON -DKILN_CUDA=OFF >/dev/null
	@cmake --build $(SANITIZE_BUILD) -j $(JOBS)
	@cd $(SANITIZE_BUILD) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	  UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 ctest --output-on-failure -j $(JOBS)

# The tests that run threads under ThreadSanitizer (Note [ThreadSanitizer build] in tests/CMakeLists.txt):
# any report fails. One kernel level: a race does not depend on the instruction set.
tsan: deps
	@cmake -S . -B $(TSAN_BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g -DNDEBUG" \
	  -DKILN_TSAN=ON -DKILN_CUDA=OFF -DKILN_CPU_KERNEL_LEVELS=host -DKILN_BUILD_EXAMPLES=OFF $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(TSAN_BUILD) -j $(JOBS)
	@cd $(TSAN_BUILD) && TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1:suppressions=$(abspath tests/tsan.supp) ctest --output-on-failure -j $(JOBS)

clean:
	rm -rf $(BUILD) $(SANITIZE_BUILD) $(TSAN_BUILD)
