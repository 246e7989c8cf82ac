# The two commands of the README:  `make demo` (set up + main job)  and  `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: setup demo test builtin clean chromium

# torch is installed first and pinned: the 2.13.0 CPU build; an unpinned torch pulls a multi-GB CUDA build.
$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

setup: $(BIN)/.installed

demo: setup
	$(BIN)/latentdiff demo --out out/demo.png

# tests/test_browser.py drives Debian's chromium with Playwright (no browser download). Installed here
# when missing and we are root with apt-get; otherwise that test is skipped and says why.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; } \
	      || echo "apt-get install chromium failed: the browser test will be skipped"; \
	  else echo "chromium is not installed (needs root and apt-get): the browser test will be skipped"; fi; }

test: setup chromium
	$(BIN)/ruff check latentdiff tests benchmarks
	$(BIN)/ruff format --check latentdiff tests benchmarks
	$(BIN)/python -m pytest -q

# Retrain the built-in model from scratch (README "The built-in model"): each run resumes if interrupted.
# Stage one (about 2 h on a 2-core CPU) writes a first models/shapes-64 (float16, shards <= 16 MiB,
# with its CLIP's image side); stage two (about 4.2 h) trains a sharper decoder for its frozen encoder,
# then 9,000 and 15,000 more UNet steps on larger pools, then 8,000 with the text tower's layers training
# too, 7,000 with the layout loss, then a second decoder and 4,500 more layout steps (round five), then
# 4,500 more on new scenes (round six), each round overwriting models/shapes-64, and last a third decoder
# trained on latents round six's UNet draws (round eight, 73 min), whose vae/ replaces the folder's.
# recipes/*_builtin.toml (shapes and emoji, a 4x VAE) are the next built-in model, not trained yet.
builtin: setup
	$(BIN)/latentdiff train vae --recipe recipes/vae_shapes.toml --resume
	$(BIN)/latentdiff train clip --recipe recipes/clip_shapes.toml --resume
	$(BIN)/latentdiff train unet --recipe recipes/unet_shapes.toml --resume
	$(BIN)/latentdiff convert runs/unet_shapes/model models/shapes-64 --to diffusers --half --max-shard-mb 16
	$(BIN)/latentdiff train vae --recipe recipes/vae_shapes_decoder.toml --resume
	$(BIN)/latentdiff train unet --recipe recipes/unet_shapes_continue.toml --resume
	$(BIN)/latentdiff convert runs/unet_shapes_continue/model models/shapes-64 --to diffusers --half --max-shard-mb 16
	$(BIN)/latentdiff train unet --recipe recipes/unet_shapes_continue2.toml --resume
	$(BIN)/latentdiff convert runs/unet_shapes_continue2/model models/shapes-64 --to diffusers --half --max-shard-mb 16
	$(BIN)/latentdiff train unet --recipe recipes/unet_shapes_text.toml --resume
	$(BIN)/latentdiff convert runs/unet_shapes_text/model models/shapes-64 --to diffusers --half --max-shard-mb 16
	$(BIN)/latentdiff train unet --recipe recipes/unet_shapes_layout.toml --resume
	$(BIN)/latentdiff convert runs/unet_shapes_layout/model models/shapes-64 --to diffusers --half --max-shard-mb 16
	$(BIN)/latentdiff train vae --recipe recipes/vae_shapes_decoder2.toml --resume
	$(BIN)/latentdiff train unet --recipe recipes/unet_shapes_layout2.toml --resume
	$(BIN)/latentdiff convert runs/unet_shapes_layout2/model models/shapes-64 --to diffusers --half --max-shard-mb 16
	$(BIN)/latentdiff train unet --recipe recipes/unet_shapes_layout3.toml --resume
	$(BIN)/latentdiff convert runs/unet_shapes_layout3/model models/shapes-64 --to diffusers --half --max-shard-mb 16
	$(BIN)/latentdiff train vae --recipe recipes/vae_shapes_redraw.toml --resume
	rm -rf out/shapes-64-redraw
	$(BIN)/latentdiff convert models/shapes-64 out/shapes-64-redraw --to diffusers --half --max-shard-mb 16 --vae runs/vae_shapes_redraw
	cp out/shapes-64-redraw/vae/diffusion_pytorch_model.safetensors models/shapes-64/vae/
	$(BIN)/latentdiff train unet --recipe recipes/unet_shapes_apart.toml --resume
	rm -rf out/shapes-64-apart
	$(BIN)/latentdiff convert models/shapes-64 out/shapes-64-apart --to diffusers --half --max-shard-mb 16 --unet runs/unet_shapes_apart/step-00003000.pt
	cp out/shapes-64-apart/unet/diffusion_pytorch_model.safetensors models/shapes-64/unet/
	cp out/shapes-64-apart/text_encoder/model.safetensors models/shapes-64/text_encoder/
	$(BIN)/latentdiff evaluate --model models/shapes-64 --grid out/evaluate.png

clean:
	rm -rf $(VENV) out .pytest_cache
