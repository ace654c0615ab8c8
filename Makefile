# The two set-up commands of the README. Each (re)creates .venv when it is missing or
# older than requirements.txt, then runs the demo or the tests.
PY ?= python3
VENV := .venv
STAMP := $(VENV)/.requirements-installed
RUN := $(VENV)/bin/python

.PHONY: demo test bench clean

$(STAMP): requirements.txt
	test -x $(RUN) || $(PY) -m venv $(VENV)
	$(RUN) -m pip install -q -r requirements.txt
	touch $(STAMP)

demo: $(STAMP)
	$(RUN) run_sample.py --demo --work_dir .

test: $(STAMP)
	$(RUN) -m pytest -q tests

bench: $(STAMP)
	$(RUN) bench/bench_cam.py --backbone resnet18 --crop 128 --batch 16 --image 160x120
	$(RUN) bench/bench_cam.py --backbone resnet50 --crop 512 --batch 8 --iters 2 --image 500x375 --n_images 2
	$(RUN) bench/bench_orandnet.py --net small_fcn --image 160x120 --classes 3 --n_images 10
	$(RUN) bench/bench_orandnet.py --net fcn8s_vgg16 --image 500x375 --classes 2 --n_images 2
	$(RUN) bench/bench_walk.py

clean:
	rm -rf sess result toy_voc
