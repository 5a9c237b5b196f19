# The two commands in README.md. Each sets up what it needs from nothing.
VENV ?= .venv
SAMPLE_DIR ?= sample

.PHONY: run test setup sample

setup:
	@scripts/setup.sh

# Main job on the embedded default: make a sample AI-style clip, finish it for YouTube.
run: setup sample
	$(VENV)/bin/finishline process $(SAMPLE_DIR)/ai-clip-12fps.mp4 --preset youtube-1080p \
	    -o $(SAMPLE_DIR)/out/ai-clip-12fps.youtube-1080p.mp4 --overwrite
	@echo "finished: $(SAMPLE_DIR)/out/ai-clip-12fps.youtube-1080p.mp4"

sample:
	@mkdir -p $(SAMPLE_DIR)/out
	@test -f $(SAMPLE_DIR)/ai-clip-12fps.mp4 || ffmpeg -v error -y \
	    -f lavfi -i "testsrc2=size=640x360:rate=12:duration=2,noise=alls=12:allf=t" \
	    -f lavfi -i "sine=frequency=330:sample_rate=44100:duration=2" \
	    -c:v libx264 -crf 36 -pix_fmt yuv420p -c:a aac -shortest $(SAMPLE_DIR)/ai-clip-12fps.mp4

test: setup
	$(VENV)/bin/python -m pytest
