#!/usr/bin/env sh
# Builds {{ name }}.wasm: componentize-py (pinned in requirements.txt, in a
# .venv of this project, installed on first use) compiles app.py and the
# Python interpreter into one WebAssembly component for the `{{ world }}`
# world of wit/plugin.wit.
set -eu
cd "$(dirname "$0")"
if [ ! -x .venv/bin/componentize-py ]; then
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check -r requirements.txt
fi
.venv/bin/componentize-py -d wit -w {{ world }} componentize app -o {{ name }}.wasm
echo "built {{ name }}.wasm" >&2
