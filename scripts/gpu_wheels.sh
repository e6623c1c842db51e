#!/usr/bin/env bash
# Wheels for an offline GPU machine whose image has PyTorch (2.11, CPython 3.12) and the common
# scientific stack but not LeRobot: what scripts/gpu_report.py needs beyond that image, for one
# group of its jobs, downloaded here into DIR.
#
#   scripts/gpu_wheels.sh policy .whl     # groups policy, anchors, train  (~63 MB)
#   scripts/gpu_wheels.sh render .whl     # group render: gsplat, MuJoCo   (~17 MB)
#
# On the GPU machine:
#   python3 -m pip install --no-index --no-deps --target /tmp/site DIR/*.whl
#   PYTHONPATH=/tmp/site:. MUJOCO_GL=egl python3 scripts/gpu_report.py --out OUT --groups ...
#
# The versions are those of this project's environment (lerobot 0.4.4 pins transformers < 5 and
# huggingface-hub < 0.36, which the image's newer releases would break). gsplat compiles its CUDA
# kernels on first use (nvcc and ninja on the machine; set TORCH_CUDA_ARCH_LIST to its GPU).
set -euo pipefail
group=${1:?usage: gpu_wheels.sh policy|render DIR}
dir=${2:?usage: gpu_wheels.sh policy|render DIR}
python_version=${PYTHON_VERSION:-3.12}

case "$group" in
  policy) wheels=(lerobot==0.4.4 transformers==4.57.6 huggingface-hub==0.35.3 tokenizers==0.22.2
                  av==15.1.0 diffusers==0.35.2 datasets==4.8.5 draccus==0.10.0 pyyaml-include==1.4.1
                  toml==0.10.2 mergedeep==1.3.4 deepdiff==8.6.2 orderly-set==5.5.0 dill==0.4.1
                  multiprocess==0.70.19 pyserial==3.5 dm-tree==0.1.10 pydantic==2.14.3 pydantic_core==2.50.4
                  typing-inspection==0.4.5 annotated-types==0.8.0 gymnasium==1.4.0 farama-notifications==0.0.6
                  num2words==0.5.14 termcolor==3.3.0 jsonlines==4.0.0)
          sdists=(docopt==0.6.2) ;;
  render) wheels=(gsplat==1.5.3 mujoco==3.8.1 pyopengl==3.1.10 gymnasium==1.4.0 farama-notifications==0.0.6)
          sdists=() ;;
  *) echo "unknown group '$group': policy or render" >&2; exit 2 ;;
esac

mkdir -p "$dir"
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version "$python_version" \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$dir" "${wheels[@]}"
for sdist in "${sdists[@]}"; do  # pure-Python packages published only as source
  python3 -m pip wheel --quiet --no-deps -w "$dir" "$sdist"
done
du -sh "$dir"
