# Entry points. `make study` and `make test` are the README's two commands; each installs what it
# needs into .venv first (torch 2.14.1 + torchvision 0.29.1, then the project, built in place).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip -q
# Serialises concurrent builds of the extension (ninja's build folder is shared).
LOCK := flock $(CURDIR)/build/.lock
PRESET ?= quick
PYTEST_ARGS ?=

.PHONY: venv build study reference-report data preview test test-all mutate bench profile gpu-check lint clean

$(VENV)/.deps: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip setuptools wheel ninja
	$(PIP) install torch==2.14.1 torchvision==0.29.1
	$(PIP) install "numpy>=1.24" "scipy>=1.10" "seaborn>=0.13" "matplotlib>=3.7" "tqdm>=4.60" "pandas>=2.0" \
	  "pytest>=8" "pytest-timeout>=2.3" "pytest-randomly>=3.15" "import-linter>=2.1" "hypothesis>=6.100" "pytest-benchmark>=4" "monai>=1.3" "ray>=2.9" \
	  "tensorboard>=2.14" "ruff>=0.6"
	touch $@

venv: $(VENV)/.deps

# Compile retina_unet._C in place (incremental through ninja); CUDA sources too when torch is a
# CUDA build and nvcc is found, or FORCE_CUDA=1. Compiled once: the editable install that follows
# (packages + console scripts) skips the extension (RETINA_UNET_SKIP_EXT=1) and uses this build.
build: venv
	@mkdir -p build
	$(LOCK) $(PY) setup.py -q build_ext --inplace
	@test -f $(VENV)/.editable || { RETINA_UNET_SKIP_EXT=1 $(LOCK) $(PIP) install --no-build-isolation --no-deps -e . && touch $(VENV)/.editable; }

# All three 2D toy tasks (1000/500/1000 images each, 1.3 GB per task) into data/toy2d (git-ignored).
data: build
	$(PY) -m toy_data generate --dim 2 --out data/toy2d
	$(PY) -m toy_data preview data/toy2d/donuts_shape --out out/preview/donuts_shape_2d.png

# A small donuts_shape dataset and its preview picture, in seconds: out/preview/donuts_shape_2d.png
preview: venv
	$(PY) -m toy_data generate --task donuts_shape --dim 2 --n-train 16 --n-val 4 --n-test 4 --quiet \
	  --out data/preview/donuts_shape_2d
	$(PY) -m toy_data preview data/preview/donuts_shape_2d --out out/preview/donuts_shape_2d.png

# The main job: the toy scaling study (PRESET=quick by default; `python -m retina_unet.study presets` lists
# them), resumable, results and report under studies/$(PRESET) (git-ignored): a user's study never rewrites
# tracked files.
study: build
	$(PY) -m retina_unet.study run --preset $(PRESET) --report

# Regenerate the committed reference report reports/$(PRESET) from studies/$(PRESET), on purpose only.
reference-report: build
	$(PY) -m retina_unet.study report --out studies/$(PRESET) --report-dir reports/$(PRESET)

test: build
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

test-all: build
	$(PY) -m pytest $(PYTEST_ARGS)

# Mutation testing (slow; not part of `make test`): mutmut over inference, evaluation, the study
# report, training checkpoint/resume and toy_data, each against its fast tests. Report under
# reports/mutation/. One group: make mutate GROUPS=inference
GROUPS ?=
mutate: build
	$(PIP) install "mutmut>=3.3,<4"
	$(PY) -m reports.mutation $(GROUPS)

bench: build
	$(PY) -m pytest benchmarks/test_bench_nms.py benchmarks/test_bench_roi_align.py --benchmark-only --benchmark-json=reports/kernels/bench_cpu.json $(PYTEST_ARGS)
	$(PY) -m reports.kernels --slim --json reports/kernels/bench_cpu.json --out reports/kernels --markdown reports/kernels/cpu_table.md

gpu-check:
	bash benchmarks/gpu_check.sh $${OUT:-device_out}

lint: venv
	$(PY) -m ruff check retina_unet toy_data benchmarks tests reports

clean:
	rm -rf build retina_unet/*.so *.egg-info

# Profile one op: make profile OP=nms DIM=3 SIZE=5000 [DEVICE=cuda] [NCU=1]
OP ?= nms
DIM ?= 3
SIZE ?= 5000
profile: build
	$(PY) -m benchmarks.profile_op --op $(OP) --dim $(DIM) --size $(SIZE) $(if $(DEVICE),--device $(DEVICE)) $(if $(NCU),--ncu) --out reports/profile
