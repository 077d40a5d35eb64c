# Two commands do all set-up: `make demo` and `make test` (README.md).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
BASE_STAMP := $(VENV)/.base-installed
TEST_STAMP := $(VENV)/.test-installed
# Two pytest-xdist workers: the whole suite in ~9 min on 2 CPU cores instead of ~11 (BUILD_NOTES.md).
PYTEST_ARGS ?= -n 2

.PHONY: demo test venv clean-venv checkpoints paper accelerator-check

venv: $(BASE_STAMP)

$(BASE_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(PIP) install -q -e .
	touch $@

$(TEST_STAMP): $(BASE_STAMP)
	$(PIP) install -q -e '.[test]' 'torch==2.13.0'
	$(PIP) install -q --no-deps 'torchattacks==3.5.1'
	touch $@

# The default job: the shipped checkpoints on the generated synthetic test splits.
DEMO_OUT ?= outputs/demo
DEMO_DATA ?= outputs/data
DEMO_EPS ?= 0,0.001,0.002,0.004,0.008,0.016,0.05,0.2
DEMO_COMMON = --out_dir=$(DEMO_OUT) --data_dir=$(DEMO_DATA) --tolerance=0:1:21 --eps=$(DEMO_EPS) \
	--attacks='fgsm,pgd(steps=10),cw_bounded(steps=10)' $(DEMO_FLAGS)
DEMO_FLAGS ?= --figure_formats=png

demo: $(BASE_STAMP)
	$(BIN)/python experiments/sweep.py $(DEMO_COMMON) \
	  --models=checkpoints/meso4,checkpoints/meso_inception4 --dataset=synthetic_images \
	  --dataset_config=image_size=64 --dataset_config=train_size=0 --dataset_config=validation_size=0 \
	  --dataset_config=test_size=$(DEMO_IMAGES) --num_samples=$(DEMO_IMAGES)
	$(BIN)/python experiments/sweep.py $(DEMO_COMMON) \
	  --models=checkpoints/meso4_video --dataset=synthetic_videos \
	  --dataset_config=image_size=64 --dataset_config=num_frames=8 --dataset_config=train_size=0 \
	  --dataset_config=validation_size=0 --dataset_config=test_size=$(DEMO_CLIPS) --num_samples=$(DEMO_CLIPS)

DEMO_IMAGES ?= 64
DEMO_CLIPS ?= 16

# The same job at a size for the README's comparison (~17 min on 2 CPU cores).
paper: $(BASE_STAMP)
	$(MAKE) demo DEMO_OUT=outputs/paper DEMO_IMAGES=500 DEMO_CLIPS=200 DEMO_FLAGS=--figure_formats=png,pdf \
	  DEMO_EPS=0,0.0005,0.001,0.002,0.004,0.008,0.016,0.05,0.1,0.2

# Retrains the shipped checkpoints with the commands recorded in their sidecars (CPU, ~30 min).
TRAIN_IMAGES = --dataset=synthetic_images --data_dir=outputs/data --dataset_config=image_size=64 \
	--dataset_config=train_size=4000 --dataset_config=validation_size=500 --dataset_config=test_size=500 \
	--image_size=64 --epochs=15 --batch_size=32 --learning_rate=1e-3 --seed=0

checkpoints: $(BASE_STAMP)
	$(BIN)/python experiments/train.py --model=meso4 $(TRAIN_IMAGES) \
	  --out_dir=outputs/train/meso4 --export_dir=checkpoints/meso4 --overwrite_export
	$(BIN)/python experiments/train.py --model=meso_inception4 $(TRAIN_IMAGES) \
	  --out_dir=outputs/train/meso_inception4 --export_dir=checkpoints/meso_inception4 --overwrite_export
	$(BIN)/python experiments/train.py --model=meso4_video --num_frames=8 --image_size=64 \
	  --dataset=synthetic_videos --data_dir=outputs/data --dataset_config=image_size=64 \
	  --dataset_config=num_frames=8 --dataset_config=train_size=1600 --dataset_config=validation_size=200 \
	  --dataset_config=test_size=200 --epochs=15 --batch_size=16 --learning_rate=1e-3 --seed=0 \
	  --out_dir=outputs/train/meso4_video --export_dir=checkpoints/meso4_video --overwrite_export

# On a GPU/TPU machine (within 8 minutes): the device benchmark (Meso4 and Xception at 256 px,
# float32 and bfloat16, rrjax grid vs per-ε, % of the device's matmul peak) and a small sweep of the
# shipped checkpoints, as ONE table in $(ACCEL_OUT)/<device>.md (BENCHMARKS.md, "Accelerators").
# ACCEL_FLAGS=--quick runs the same path on a CPU in seconds (tests/bench/test_device.py).
ACCEL_OUT ?= outputs/accelerator
ACCEL_FLAGS ?=

accelerator-check: $(BASE_STAMP)
	$(BIN)/python experiments/bench.py --accelerator_check --out_dir=$(ACCEL_OUT) $(ACCEL_FLAGS)

test: $(TEST_STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

clean-venv:
	rm -rf $(VENV)
