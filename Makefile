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

.PHONY: venv build study data preview test test-all mutate bench bench-cpu profile gpu-check lint clean

$(VENV)/.deps: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip setuptools wheel ninja
	$(PIP) install torch==2.14.1 torchvision==0.29.1
	$(PIP) install "numpy>=1.24" "scipy>=1.10" "seaborn>=0.13" "matplotlib>=3.7" "tqdm>=4.60" "pandas>=2.0" \
	  "pytest>=8" "pytest-timeout>=2.3" "pytest-randomly>=3.15" "import-linter>=2.1" "hypothesis>=6.100" "pytest-benchmark>=4" "monai>=1.3" "ray>=2.9" \
	  "tensorboard>=2.14"
	touch $@

venv: $(VENV)/.deps

# Compile retina_unet._C in place (incremental through ninja); CUDA sources too when torch is a
# CUDA build and nvcc is found, or FORCE_CUDA=1.
build: venv
	@mkdir -p build
	$(LOCK) $(PY) setup.py -q build_ext --inplace
	@test -f $(VENV)/.editable || { $(LOCK) $(PIP) install --no-build-isolation --no-deps -e . && touch $(VENV)/.editable; }

data: build
	$(PY) -m toy_data generate --dim 2 --out data/toy2d
	$(PY) -m toy_data preview data/toy2d/donuts_shape --out data/toy2d/donuts_shape_preview.png

# The main job: the toy scaling study (PRESET=quick by default; `python -m retina_unet.study presets` lists them), resumable,
# results under studies/$(PRESET), report under reports/$(PRESET).
study: build
	$(PY) -m retina_unet.study run --preset $(PRESET) --report

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
