#!/usr/bin/env bash
# CUDA tests + GPU benchmarks (validation/gpu_check.py), JSON in $OUT/gpu_check.json; runs from
# the checkout without installing it (tucker_dlra.nn = nn/ through a link folder); wheels in
# .whl/ (e.g. array-api-compat, absent from some GPU images) are unpacked first.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -d .whl ]; then python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl; fi
shim=$(mktemp -d) && mkdir "$shim/tucker_dlra" && ln -s "$PWD"/tucker_dlra/* "$shim/tucker_dlra/" && ln -s "$PWD/nn" "$shim/tucker_dlra/nn" && ln -s "$PWD/app" "$shim/tucker_dlra/app"
export PYTHONPATH="$shim:/tmp/site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 PYTHONSAFEPATH=1
exec python3 validation/gpu_check.py --out "${OUT:-validation/out}" "$@"
