"""`python -m lora_demo info` and the app: importing starts nothing, launching serves the System panel."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from lora_demo.device import detect


def test_info_json_lists_embedded_models_offline():
    out = subprocess.run(
        [sys.executable, "-m", "lora_demo", "info", "--json"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    offline = {m["id"]: m["available_offline"] for m in info["models"]}
    assert offline["smollm2-135m-instruct"] and offline["qwen3-tiny"]
    # The CLI reports exactly what the device policy decides in this environment, not a value of its own ...
    plan = detect().to_dict()
    assert {k: info[k] for k in plan} == plan
    # ... and with no GPU that decision is the CPU path, whatever the CPU.
    if not torch.cuda.is_available():
        assert (info["device"], info["backend"]) == ("cpu", "transformers")


def test_cli_help_lists_commands():
    out = subprocess.run([sys.executable, "-m", "lora_demo", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "info" in out.stdout


def test_the_cli_and_its_help_do_not_import_torch():
    """`import lora_demo.cli` and `python -m lora_demo --help` stay light: torch (seconds, gigabytes) is imported
    only by the commands that compute (issue 29)."""
    code = (
        "import sys, runpy; sys.argv = ['lora_demo', '--help']\nimport lora_demo.cli\nassert 'torch' not in "
        "sys.modules\ntry:\n    runpy.run_module('lora_demo', run_name='__main__')\nexcept SystemExit:\n    pass\n"
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip().endswith("False") and "usage:" in out.stdout, out.stderr


def test_importing_app_starts_nothing():
    code = "import app, threading; assert threading.active_count() == 1, threading.enumerate(); print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "ok", out.stderr


def test_auth_flag_parsing():
    import app

    assert app.resolve_auth(app.parse_args(["--auth", "u:p"])) == ("u", "p")
    assert app.resolve_auth(app.parse_args([])) is None
    user, password = app.resolve_auth(app.parse_args(["--share"]))
    assert user == "lora" and len(password) >= 12
    with pytest.raises(SystemExit):
        app.resolve_auth(app.parse_args(["--auth", "nopassword"]))


def test_app_serves_system_info(app_client):
    text = app_client.predict(api_name="/system_info")
    assert "Training backend" in text and "smollm2-135m-instruct" in text
