#!/usr/bin/env bash
# Builds a throw-away venv with the reference library (MineStudio 1.1.6 from PyPI, installed without
# its simulator/online dependencies) so that tests fixtures and benchmarks can be compared against it:
# its data loader, action mapping and RocketPolicy import and run on CPU. Not a dependency of minetrain.
# Idempotent; prints "ready" at the end.   bash benchmarks/reference-venv.sh   (venv: $REFERENCE_VENV, default /tmp/reference-venv)
set -euo pipefail
VENV=${REFERENCE_VENV:-/tmp/reference-venv}
PY=${PYTHON:-python3}

check() {
  HF_HUB_OFFLINE=1 "$VENV/bin/python" - <<'EOF' >/dev/null 2>&1
import importlib.metadata as md, lmdb
assert md.version("minestudio") == "1.1.6" and int(lmdb.__version__.split(".")[0]) < 2
import minestudio.data, minestudio.offline, minestudio.offline.lightning_callbacks
from minestudio.data.minecraft.callbacks import ImageKernelCallback, ActionKernelCallback, SegmentationKernelCallback
from minestudio.models import RocketPolicy
from minestudio.offline.mine_callbacks import BehaviorCloneCallback
EOF
}

if [ -x "$VENV/bin/python" ] && check; then echo "venv $VENV already works"; echo ready; exit 0; fi

start=$SECONDS
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP="$VENV/bin/pip"
# torch: the CUDA build on this machine's local disk (it runs on CPU); the pip constraint caps it.
"$PIP" install torch==2.14.1 torchvision==0.29.1
# MineStudio itself without its declared deps (ray, pyrender, imgui, pyglet, pyopengl, cuda-python,
# wandb, hydra, Pyro4, minecraft_data, ... are simulator/online/logging only). gym3 likewise: only
# gym3.types is used (utils/vpt_lib/action_head.py:13); its deps glfw/moderngl/imageio-ffmpeg and
# numpy<2 are for its viewer, while importing the package needs cffi and imageio.
"$PIP" install --no-deps minestudio==1.1.6 gym3==0.3.3
# What the three subpackages import, with these deviations from MineStudio's declared pins:
#  - opencv-python(-headless)==4.8.0.74 is yanked, built for numpy 1.x and conflicts with any
#    albumentations >=1.4.1 (needs headless>=4.9.0.80): use opencv-python-headless 4.x instead.
#  - lmdb<2: lmdb>=2.0 refuses to open an environment twice in one process, and
#    RawDataModule.setup opens every LMDB twice (train and val RawDataset) -> lmdb.Error.
#  - dm-tree, x_transformers==0.27.1, transformers: only because minestudio/models/__init__.py
#    imports steve_one, whose mineclip_lib imports them at module level.
"$PIP" install av==13.1.0 "opencv-python-headless<5" "lmdb<2" numpy albumentations \
  lightning timm einops huggingface_hub rich tqdm requests gymnasium gym attrs absl-py omegaconf \
  "cffi<2" imageio dm-tree x_transformers==0.27.1 transformers
check || { echo "import check failed" >&2; exit 1; }
echo "installed in $((SECONDS - start)) s; venv size $(du -sh "$VENV" | cut -f1)"
"$VENV/bin/python" -c "import importlib.metadata as m; print(' '.join(f'{p}=={m.version(p)}' for p in ['minestudio','torch','torchvision','lightning','timm','av','opencv-python-headless','lmdb','numpy','albumentations']))"
echo ready
