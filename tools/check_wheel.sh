#!/usr/bin/env bash
# `make wheel-check`: install as a new user would, in a fresh virtual environment that has
# only torch (the $2 requirement, e.g. torch==2.13.0):
#  1. `pip install .` with pip's default build isolation either succeeds and imports, or
#     fails within 60 s with a message that names --no-build-isolation;
#  2. the wheel that `make wheel` left in dist/ holds py.typed and LICENSE, installs next to that torch and imports,
#     and its version names that torch (0.1.0+pt213cpu).
# Usage: bash tools/check_wheel.sh <python that built the wheel> <torch requirement>
set -euo pipefail
cd "$(dirname "$0")/.."
build_py=$1
torch_req=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m venv "$tmp/venv"
V="$tmp/venv/bin/python"
$V -m pip install -q --upgrade pip
$V -m pip install -q "$torch_req"

echo "wheel-check: pip install . (default build isolation) in a fresh environment with $torch_req"
start=$(date +%s)
if $V -m pip install . > "$tmp/isolated.log" 2>&1; then
  (cd "$tmp" && $V -c "import mtlkernels; print('wheel-check: isolated build imports:', mtlkernels.__version__)")
  $V -m pip uninstall -q -y mtlkernels
else
  secs=$(( $(date +%s) - start ))
  if ! grep -q -- "--no-build-isolation" "$tmp/isolated.log"; then
    tail -40 "$tmp/isolated.log"
    echo "wheel-check: FAILED, the isolated build failed without naming --no-build-isolation"
    exit 1
  fi
  if [ "$secs" -gt 60 ]; then
    echo "wheel-check: FAILED, the isolated build took ${secs} s to fail"
    exit 1
  fi
  echo "wheel-check: the isolated build stopped after ${secs} s with the fix:"
  grep -m 3 -- "mtlkernels" "$tmp/isolated.log" | sed 's/^/    /'
fi

whl=$(ls -t dist/mtlkernels-*.whl | head -1)
# The typing marker and the license travel in the wheel.
for member in "mtlkernels/py.typed" "licenses/LICENSE"; do
  if ! python3 -m zipfile -l "$whl" | grep -q "$member"; then
    echo "wheel-check: FAILED, $whl has no $member"; exit 1
  fi
done
echo "wheel-check: installing $whl"
$V -m pip install -q "$whl"
(cd "$tmp" && $V - <<'PY'
import json, re
import torch
import mtlkernels
info = mtlkernels.build_info()
m = re.match(r"(\d+)\.(\d+)", torch.__version__)
flavour = "cu" + torch.version.cuda.replace(".", "") if torch.version.cuda else "cpu"
tag = f"pt{m[1]}{m[2]}{flavour}"
assert mtlkernels.__version__.endswith("+" + tag), (mtlkernels.__version__, tag)
x = torch.tensor([-2.0, 0.5, 3.0])
assert torch.equal(mtlkernels.ops.soft_threshold(x, torch.tensor(1.0)), torch.tensor([-1.0, 0.0, 2.0]))
print("wheel-check: OK,", json.dumps(info))
PY
)
