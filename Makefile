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
	$(RUN) bench/bench.py

clean:
	rm -rf sess result toy_voc
