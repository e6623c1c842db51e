#!/usr/bin/env bash
# Wheels for an offline GPU machine whose image has CPython 3.12, PyTorch 2.11 and the common
# scientific and Hugging Face stack (transformers, tokenizers, huggingface-hub, accelerate, peft,
# timm, pandas, ...) but not LeRobot: what scripts/gpu_report.py needs beyond that image, for one
# group of its jobs, downloaded here into DIR. Never torch: the image's own CUDA build is used.
#
#   scripts/gpu_wheels.sh policy .whl     # groups policy, anchors, train: LeRobot 0.6.1  (~55 MB)
#   scripts/gpu_wheels.sh render .whl     # group render: gsplat, MuJoCo                   (~17 MB)
#
# On the GPU machine:
#   python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site DIR/*.whl
#   PYTHONPATH=/tmp/site:. MUJOCO_GL=egl python3 scripts/gpu_report.py --out OUT --jobs GROUP ...
#
# The list is what the jobs import that the image lacks, plus what those packages declare, at
# the versions of this project's environment (pyproject.toml: lerobot[dataset,pi,smolvla]
# 0.6.1, which imports its dataset stack and draccus for every policy). Two are in the image at
# versions that fail: LeRobot 0.6.1 pins transformers < 5.6 (its pi0 / pi05 / smolvla subclass
# transformers' Gemma, PaliGemma and SmolVLM), and transformers 5.5 refuses to import beside a
# tokenizers newer than 0.23.0. The sims of the other extras (PushT, ALOHA, MetaWorld) run in no
# job. gsplat compiles its CUDA kernels on first use (nvcc and ninja on the machine; set
# TORCH_CUDA_ARCH_LIST to its GPU). PYTHON (python3) is the interpreter whose pip downloads here,
# PYTHON_VERSION (3.12) the GPU machine's.
set -euo pipefail
usage="usage: gpu_wheels.sh policy|render DIR"
group=${1:?$usage}
dir=${2:?$usage}
python=${PYTHON:-python3}
python_version=${PYTHON_VERSION:-3.12}

case "$group" in
  policy) wheels=(lerobot==0.6.1 transformers==5.5.4 tokenizers==0.22.2 draccus==0.11.6 mergedeep==1.3.4
                  toml==0.10.2 termcolor==3.3.0 datasets==4.8.5 dill==0.4.1 multiprocess==0.70.19 av==15.1.0
                  dm-tree==0.1.10 num2words==0.5.14 gymnasium==1.4.0 farama-notifications==0.0.6)
          sdists=(docopt==0.6.2) ;;
  render) wheels=(gsplat==1.5.3 mujoco==3.8.1 pyopengl==3.1.10 glfw==2.11.0 gymnasium==1.4.0
                  farama-notifications==0.0.6)
          sdists=() ;;
  *) echo "unknown group '$group': policy or render" >&2; exit 2 ;;
esac

mkdir -p "$dir"
"$python" -m pip download --quiet --no-deps --only-binary=:all: --python-version "$python_version" \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$dir" "${wheels[@]}"
for sdist in "${sdists[@]}"; do  # pure-Python packages published only as source
  "$python" -m pip wheel --quiet --no-deps -w "$dir" "$sdist"
done
du -sh "$dir"
