# Set-up and everyday commands. `make test` and `make demo` install what is missing first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# torch/torchvision pair that installs from this project's CPU machines' local wheel store and is
# the regular (CUDA-enabled) build on a GPU box. A torch already in the venv is kept as it is.
TORCH_PAIR ?= torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.installed

.PHONY: install test demo bench doctor gpu-prepare clean

install: $(STAMP)

# The stamp depends on pyproject.toml, so a second `make install` does nothing unless deps changed.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch, torchvision" 2>/dev/null || $(PIP) install -q $(TORCH_PAIR)
	$(PIP) install -q -e ".[test,web]"
	@# Build the C++ CPU rasteriser now (about 30 s once) rather than in the first render; a machine
	@# without a compiler renders with the torch backend instead.
	$(PY) -c "from splat_portrait.render.cpu_backend import cpu_status; print('renderer:', cpu_status()[1])"
	@# PlayCanvas' splat-transform validates our .ply files in the tests; optional where npm is missing.
	if command -v npm >/dev/null; then npm install --silent --no-audit --no-fund --prefix .tools @playcanvas/splat-transform@3.7.0 \
		|| echo "note: splat-transform not installed; its .ply test will be skipped"; fi
	touch $(STAMP)

test: install
	$(VENV)/bin/pytest -q

# The main job: animate the bundled example (scikit-image's public-domain astronaut photo and our
# espeak-ng speech, examples/speech.wav) with the bundled default model.
DEMO := demo-output
demo: install
	mkdir -p $(DEMO)
	$(PY) -c "from skimage import data; from PIL import Image; Image.fromarray(data.astronaut()).save('$(DEMO)/astronaut.png')"
	$(VENV)/bin/splat-portrait animate $(DEMO)/astronaut.png examples/speech.wav -o $(DEMO)/astronaut.mp4 \
		--camera orbit --ply $(DEMO)/astronaut.ply

bench: install
	$(PY) benchmarks/render.py

# Fill the ignored .gpu/ folder (gsplat's wheel, prepared inputs, the corpus at 128²) for
# benchmarks/gpu_check.py on a GPU machine that reaches no package index; see README "GPU machines".
gpu-prepare: install
	$(PY) benchmarks/gpu_check.py --prepare --corpus ../shared/data/videos

doctor: install
	$(VENV)/bin/splat-portrait doctor

clean:
	rm -rf $(VENV) build *.egg-info
