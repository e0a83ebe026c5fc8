# The two commands of the README: `make demo` runs the main job, `make test`
# the test suite. Both set up .venv first (tools/setup_env.sh), which takes
# about a second when nothing changed.
PY := .venv/bin/python
PYTEST_ARGS ?=
# OpenMP threads that spin while waiting make a shared 2-core machine crawl.
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: setup demo test test-all benchmark benchmark-models sanitize clean

setup:
	@bash tools/setup_env.sh

# The main job: train, evaluate and visualise Mask R-CNN InternImage-T on a
# tiny generated COCO set, then UperNet InternImage-T on a tiny ADE20K set.
demo: setup
	$(PY) tools/demo_det.py --data data/tiny_coco --work-dir work_dirs/demo_det
	$(PY) tools/demo_seg.py --data data/tiny_ade20k --work-dir work_dirs/demo_seg

test: setup
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

# Everything, the full-size slow runs included.
test-all: setup
	$(PY) -m pytest $(PYTEST_ARGS)

benchmark: setup
	$(PY) tools/benchmark_dcnv3.py

# The end-to-end table: InternImage-T (eager, compiled, pure-PyTorch core)
# against mmpretrain's ConvNeXt-T and Swin-T.
benchmark-models: setup
	$(PY) tools/benchmark_models.py --detection

# The op's tests against a CPU kernel built with AddressSanitizer and
# UndefinedBehaviorSanitizer, in build-sanitize/ (the in-place build is left
# alone): the packages are built there and the tests copied beside them, so
# that they import the instrumented kernel. Python itself is not
# instrumented, so the ASan runtime is preloaded (with libstdc++, whose
# __cxa_throw ASan must find to intercept C++ exceptions); leak checking is off (the
# interpreter's own allocations would drown it). Any report aborts the run.
SANITIZE_DIR := build-sanitize
SANITIZE_FLAGS := -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g
sanitize: setup
	rm -rf $(SANITIZE_DIR)
	DCNV3_WITH_CUDA=0 CFLAGS="$(SANITIZE_FLAGS)" LDFLAGS="$(SANITIZE_FLAGS)" \
		$(PY) setup.py -q build --build-base $(SANITIZE_DIR) --build-lib $(SANITIZE_DIR)
	mkdir -p $(SANITIZE_DIR)/tests
	cp tests/conftest.py tests/test_dcnv3_op.py $(SANITIZE_DIR)/tests/
	cd $(SANITIZE_DIR) && \
		LD_PRELOAD="$$(gcc -print-file-name=libasan.so) $$(gcc -print-file-name=libstdc++.so)" \
		ASAN_OPTIONS=detect_leaks=0:halt_on_error=1:abort_on_error=1 \
		UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
		$(abspath $(PY)) -m pytest -p no:cacheprovider -q tests/test_dcnv3_op.py $(PYTEST_ARGS)

clean:
	rm -rf build $(SANITIZE_DIR) ops_dcnv3/_C*.so .pytest_cache
