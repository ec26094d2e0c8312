#!/usr/bin/env bash
# The clean install a user gets: build the wheel and sdist, install the wheel (not editable) into a
# fresh venv, and run losskit from outside the source tree. Called by .ci/run; runnable alone.
# TORCH pins the CPU wheel this machine holds on disk; an unpinned torch would pull a CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH="${TORCH:-torch==2.13.0}"
PY="${PY:-python3}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

.venv/bin/python -m build --outdir "$work/dist" . > "$work/build.log" 2>&1 \
  || { cat "$work/build.log"; exit 1; }
# setuptools' configuration warnings (license format, package discovery, editable layout); not
# "byte-compiling is disabled", which only says PYTHONDONTWRITEBYTECODE is set.
if grep -E "DeprecationWarning|BuildBackendWarning|is deprecated|Please be careful" "$work/build.log"; then
  echo "smoke: the build printed the warnings above. Fix: pyproject.toml" >&2
  exit 1
fi
ls "$work/dist"/losskit-*.whl "$work/dist"/losskit-*.tar.gz > /dev/null
# (a listing in a file: `unzip | grep -q` would fail under pipefail when grep exits first)
unzip -l "$work/dist"/losskit-*.whl > "$work/wheel.txt"
grep -q "losskit/py.typed" "$work/wheel.txt" \
  || { echo "smoke: the wheel lacks losskit/py.typed" >&2; exit 1; }

"$PY" -m venv "$work/venv"
"$work/venv/bin/pip" install -q "$TORCH"
"$work/venv/bin/pip" install -q "$work/dist"/losskit-*.whl
cd "$work"  # outside the source tree: `import losskit` must find the installed wheel
"$work/venv/bin/python" - <<'PY'
import torch

import losskit as lk
import losskit.functional as LF

assert "site-packages" in lk.__file__, lk.__file__
x, y = torch.tensor([[2.0, 0.0, 0.0]]), torch.tensor([0])
expected = -torch.log_softmax(x.double(), 1)[0, 0].item()  # 0.2395
assert abs(LF.cross_entropy(x, y).item() - expected) < 1e-6
assert abs(lk.CrossEntropyLoss()(x, y).item() - expected) < 1e-6
print(f"smoke: import and cross_entropy from {lk.__file__}")
PY
version=$("$work/venv/bin/losskit" --version)
echo "smoke: losskit --version -> $version"
[[ "$version" == *"$("$work/venv/bin/python" -c 'import losskit; print(losskit.__version__)')"* ]]
"$work/venv/bin/losskit" train --epochs 1 --out "$work/run" | tail -2
test -s "$work/run/metrics.json"
echo "smoke: import, one loss, --version and train --epochs 1 from the installed wheel: ok"
