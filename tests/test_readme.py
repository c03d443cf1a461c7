"""README.md stays true: every command and flag it names exists and answers --help.

The bug this catches: README's CLI table listed `python -m lora_demo export ...` while the command was never
registered (`invalid choice: 'export'`).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def readme_cli_commands() -> list[str]:
    """The subcommands in README's CLI table (`python -m lora_demo <command> ...`)."""
    section = README.split("## CLI", 1)[1].split("\n## ", 1)[0]
    return sorted(set(re.findall(r"^\| `python -m lora_demo ([\w-]+)", section, flags=re.M)))


def test_readme_names_the_commands():
    # If the table's shape changes and the regex finds nothing, the test below would pass vacuously.
    assert {"info", "lowrank", "analyze", "truncate", "validate", "plan", "train", "chat", "export"} <= set(
        readme_cli_commands()
    )


@pytest.mark.parametrize("command", readme_cli_commands())
def test_readme_cli_command_answers_help(command, capsys):
    from lora_demo.cli import main

    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    assert f"python -m lora_demo {command}" in capsys.readouterr().out


def test_readme_app_flags_exist():
    import app

    flags = set(re.findall(r"`(--[a-z-]+)", README.split("`app.py` flags:", 1)[1].split("\n\n", 1)[0]))
    assert {"--host", "--port", "--share", "--model", "--runs-dir", "--data-dir"} <= flags
    known = {opt for action in app.build_parser()._actions for opt in action.option_strings}
    assert flags <= known, f"README names app.py flags that do not exist: {sorted(flags - known)}"


def readme_bench_scripts() -> list[str]:
    return sorted(set(re.findall(r"`python (bench/\w+\.py)", README)))


@pytest.mark.parametrize("script", readme_bench_scripts())
def test_readme_bench_script_answers_help(script):
    out = subprocess.run([sys.executable, script, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "--json" in out.stdout, f"{script} must take --json (benches end with one JSON line)"
