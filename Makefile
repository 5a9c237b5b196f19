# The two commands in README.md. Each sets up what it needs from nothing.
VENV ?= .venv
SAMPLE_DIR ?= sample

.PHONY: run test setup sample lint

setup:
	@scripts/setup.sh

ROOT ?= var

# The main job on the embedded default (SQLite queue, local workers, no server): the hot-folder
# daemon rooted at ./var, with a sample AI-style clip dropped into var/hot/youtube-1080p/, and
# the TUI attached when run in a terminal. Drop more clips into var/hot/<preset>/; results
# appear in var/out/<preset>/. q (TUI) or Ctrl-C (no TUI) stops.
run: setup sample
	@mkdir -p $(ROOT)/hot/youtube-1080p
	@test -e $(ROOT)/out/youtube-1080p/ai-clip-12fps.mp4 || \
	    cp $(SAMPLE_DIR)/ai-clip-12fps.mp4 $(ROOT)/hot/youtube-1080p/
	@echo "finishline daemon: drop clips into $(ROOT)/hot/<preset>/, results in $(ROOT)/out/<preset>/"
	ROOT=$(ROOT) scripts/run.sh

sample:
	@mkdir -p $(SAMPLE_DIR)
	@test -f $(SAMPLE_DIR)/ai-clip-12fps.mp4 || ffmpeg -v error -y \
	    -f lavfi -i "testsrc2=size=640x360:rate=12:duration=2,noise=alls=12:allf=t" \
	    -f lavfi -i "sine=frequency=330:sample_rate=44100:duration=2" \
	    -c:v libx264 -crf 36 -pix_fmt yuv420p -c:a aac -shortest $(SAMPLE_DIR)/ai-clip-12fps.mp4

# Lint (ruff check + format check) and the import contract run before the tests.
test: setup lint
	$(VENV)/bin/python -m pytest

lint: setup
	$(VENV)/bin/ruff check app daemon vs_scripts tests bench setup.py
	$(VENV)/bin/ruff format --check app daemon vs_scripts tests bench setup.py
	$(VENV)/bin/lint-imports
