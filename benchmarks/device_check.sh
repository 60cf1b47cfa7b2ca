#!/usr/bin/env bash
# One check of advinv_jax on a GPU (<= 8 minutes on one GPU), run as is from
# the repository root:
#
#   benchmarks/device_check.sh                 # install wheels, test, time
#   benchmarks/device_check.sh --cpu           # dry run: tiny sizes on CPU
#   benchmarks/device_check.sh --download      # where pip has a network:
#                                              # fetch the wheels into .whl/
#
# The GPU image is expected to have Python 3.12, jax (CUDA plugin), flax,
# optax, chex, orbax, torch and pytest, and no network. What advinv_jax and
# the comparison need beyond that (WHEELS below) is installed from the folder
# .whl/ (prepared with --download on any machine with pip and a network,
# then copied along) with `pip install --no-index --no-deps --target`, into
# .device_check_site/ (put first on PYTHONPATH; nothing is installed into the
# image). Packages the image already has are not reinstalled.
#
# Then benchmarks/device_check.py runs: the 1-vs-N-device equality and exact
# inverse tests (pytest) on the GPU, the authors' iCE train step at batch 128
# (float32 and bfloat16 subnets) and PGD-40 / AutoAttack on the authors'
# fiRevNet, ours vs the PyTorch port with torchattacks on the same GPU; one
# JSON, benchmarks/results/device_check.json (override with --out PATH).
# Other arguments go to device_check.py (see its --help).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
WHEEL_DIR=${WHEEL_DIR:-.whl}
SITE=${SITE:-.device_check_site}
# name==version  import-name  (PyYAML and scikit-learn are cp312 manylinux
# wheels, the rest pure-python; versions = those the project is developed
# with). Not needed: tensorflow-datasets (only for tfds data), tensorboardX
# (optional), foolbox (only benchmarks/attacks.py); importlib_resources is
# tensorflow-datasets' undeclared need.
WHEELS="
ml_collections==1.1.0 ml_collections
PyYAML==6.0.4 yaml
absl-py==2.5.1 absl
tqdm==4.70.1 tqdm
scikit-learn==1.9.1 sklearn
joblib==1.6.0 joblib
threadpoolctl==3.8.0 threadpoolctl
importlib_resources==7.1.0 importlib_resources
torchattacks==3.5.1 torchattacks
"

if [[ "${1:-}" == "--download" ]]; then
  mkdir -p "$WHEEL_DIR"
  echo "$WHEELS" | while read -r spec _; do
    [[ -z "$spec" ]] && continue
    "$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
      --implementation cp --platform manylinux_2_28_x86_64 \
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      -d "$WHEEL_DIR" "$spec"
  done
  ls -l "$WHEEL_DIR"
  exit 0
fi

CPU=0
for a in "$@"; do [[ "$a" == "--cpu" ]] && CPU=1; done

missing=()
while read -r spec mod; do
  [[ -z "$spec" ]] && continue
  if ! "$PY" -c "import $mod" 2>/dev/null; then missing+=("${spec%%==*}"); fi
done <<< "$WHEELS"
if (( ${#missing[@]} )); then
  if [[ -d "$WHEEL_DIR" ]]; then
    echo "installing from $WHEEL_DIR: ${missing[*]}"
    mkdir -p "$SITE"
    for name in "${missing[@]}"; do
      # wheel file names use _ for - and may differ in case
      pat=$(echo "$name" | tr '-' '_')
      whl=$(ls "$WHEEL_DIR" | grep -i "^${pat}-" | head -1 || true)
      if [[ -n "$whl" ]]; then
        PIP_ROOT_USER_ACTION=ignore "$PY" -m pip install --no-index --no-deps \
          --quiet --disable-pip-version-check --target "$SITE" \
          "$WHEEL_DIR/$whl" || echo "  could not install $whl"
      else
        echo "  no wheel for $name in $WHEEL_DIR (its section may be skipped)"
      fi
    done
  else
    echo "missing: ${missing[*]}; no $WHEEL_DIR folder (prepare it with"
    echo "  benchmarks/device_check.sh --download  on a machine with pip)"
  fi
fi
export PYTHONPATH="$PWD/$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-3}
if (( CPU )); then export JAX_PLATFORMS=cpu; fi
# Hard stop at 8 minutes (the driver also skips sections past its budget).
exec timeout ${DEVICE_CHECK_TIMEOUT:-480} "$PY" -m benchmarks.device_check "$@"
