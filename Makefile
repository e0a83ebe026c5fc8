# The two commands of the README: `make demo` runs the main job, `make test`
# the test suite. Both set up .venv first (tools/setup_env.sh), which takes
# about a second when nothing changed.
PY := .venv/bin/python
PYTEST_ARGS ?=
# OpenMP threads that spin while waiting make a shared 2-core machine crawl.
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: setup demo test test-all benchmark clean

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

clean:
	rm -rf build ops_dcnv3/_C*.so .pytest_cache
