"""One rule for paths, one meaning of 'auto', the adapter lists, and the Train tab's change detection.

The bug behind this file: with README's relative `--runs-dir runs`, the Chat and Low-rank lists offered
`runs/<run>` while PathPolicy read relative paths from inside runs/, so `runs/runs/<run>` "did not exist" and
no adapter trained in the UI could be chatted with or analysed.
"""

from __future__ import annotations

import json
import os

import pytest

from lora_demo.adapters import adapter_choices
from lora_demo.errors import InputError
from lora_demo.paths import PathPolicy

NAMES = ["20261129-run", "my run with spaces", "微调-运行"]


def make_adapter(folder, base="qwen3-tiny", status=None, mtime=None):
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": base, "r": 4}))
    if status:
        (folder / "status.json").write_text(json.dumps(status))
    if mtime:
        os.utime(folder / "adapter_config.json", (mtime, mtime))
    return folder


@pytest.mark.parametrize("relative", [True, False], ids=["relative-runs-dir", "absolute-runs-dir"])
@pytest.mark.parametrize("name", NAMES)
def test_listed_typed_and_api_paths_resolve_alike(tmp_path, monkeypatch, relative, name):
    monkeypatch.chdir(tmp_path)
    runs = tmp_path / "runs"
    make_adapter(runs / name)
    runs_arg = runs.relative_to(tmp_path) if relative else runs
    policy = PathPolicy([runs_arg, tmp_path / "data"])
    ((label, listed),) = adapter_choices(runs_arg)
    assert label.startswith(name)
    want = (runs / name).resolve()
    # what the list offers, the run's name, the path from the working directory, the absolute path
    for given in (listed, name, f"runs/{name}", f"./runs/{name}/", str(runs / name)):
        assert policy.check(given, "adapter folder") == want, given


def test_the_rule_is_as_strict_as_before(tmp_path, monkeypatch):
    """No value ever yields a path outside the allowed folders (a reading inside them may be returned, e.g.
    runs/runs/link-out, and then "does not exist"); values with no reading inside them are refused."""
    monkeypatch.chdir(tmp_path)
    make_adapter(tmp_path / "runs" / "a")
    (tmp_path / "outside").mkdir()
    (tmp_path / "runs" / "link-out").symlink_to(tmp_path / "outside")
    policy = PathPolicy(["runs", "data"])
    roots = [(tmp_path / "runs").resolve(), (tmp_path / "data").resolve()]
    for value in ["runs/../outside", "runs/link-out", "link-out", "outside", "runs/a/../../outside"]:
        got = policy.check(value)
        assert any(r in got.parents for r in roots) and not got.exists(), (value, got)
    for bad in ["../x", "a/../../outside", "../../etc/passwd", "/etc", "~/.ssh", str(tmp_path / "outside")]:
        with pytest.raises(InputError, match="outside the folders"):
            policy.check(bad)
    # a name that exists outside the allowed folders (cwd/outside) is never read from there
    make_adapter(tmp_path / "runs" / "outside")
    assert policy.check("outside") == (tmp_path / "runs" / "outside").resolve()


def test_missing_path_is_reported_where_the_user_meant_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    policy = PathPolicy(["runs", "data"])
    (tmp_path / "runs").mkdir()
    assert policy.check("runs/gone") == (tmp_path / "runs" / "gone").resolve()  # not runs/runs/gone
    assert not policy.check("gone").exists()


def test_lists_put_the_newest_adapter_first_and_label_it(tmp_path):
    runs = tmp_path / "runs"
    make_adapter(runs / "old", status={"status": "completed", "final_loss": 1.23456}, mtime=1_000_000)
    make_adapter(runs / "new", status={"status": "stopped"}, mtime=2_000_000)
    (runs / "old" / "exports").mkdir()  # touching the old folder must not make it "newest"
    labels = [label for label, _ in adapter_choices(runs)]
    assert labels == ["new · stopped", "old · completed · loss 1.235"]


def test_adapter_list_preselects_a_new_run_but_keeps_a_pick(tmp_path):
    from lora_demo.ui.common import adapter_list

    runs = tmp_path / "runs"
    make_adapter(runs / "a", mtime=1_000_000)
    dd, newest = adapter_list(runs, None, None)
    assert dd.value == str(runs / "a") and newest == str(runs / "a")  # nothing picked: the newest
    make_adapter(runs / "b", mtime=2_000_000)
    dd, newest2 = adapter_list(runs, str(runs / "a"), newest)
    assert dd.value == str(runs / "b")  # a run finished since the last refresh: it is preselected
    dd, _ = adapter_list(runs, str(runs / "a"), newest2)
    assert dd.value == str(runs / "a")  # the user went back to "a": their pick stays
    dd, _ = adapter_list(runs, "/typed/elsewhere", newest2, custom_ok=False)
    assert dd.value == str(runs / "b")  # a list that takes no typed values never keeps one


def test_auto_means_the_same_everywhere(tmp_path, monkeypatch):
    import torch

    from lora_demo.models import CPU_DEFAULT, resolve_model
    from lora_demo.train.settings import TrainSettings

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    peft_only = make_adapter(tmp_path / "peft-only", base="some/base")
    lab_run = make_adapter(tmp_path / "lab-run", base="ignored/base")
    (lab_run / "config.yaml").write_text("model: qwen3-tiny\n")
    assert resolve_model("auto") == CPU_DEFAULT
    assert resolve_model(None) == CPU_DEFAULT
    assert resolve_model("auto", peft_only) == "some/base"
    assert resolve_model(" auto ", lab_run) == "qwen3-tiny"  # the run's own record wins over PEFT's
    assert resolve_model("qwen3-tiny", peft_only) == "qwen3-tiny"  # a named model is never replaced
    assert TrainSettings(model="auto").model == CPU_DEFAULT


def test_chat_loads_auto_without_an_adapter(monkeypatch):
    """'auto' with no adapter used to fail ("'auto' is neither a known model"): it is the device default."""
    import torch

    from lora_demo.chat.engine import ChatEngine
    from lora_demo.models import CPU_DEFAULT

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    engine = ChatEngine()
    loaded = []
    monkeypatch.setattr("lora_demo.chat.engine.load_model", lambda model_id, **kw: loaded.append(model_id) or 1 / 0)
    with pytest.raises(ZeroDivisionError):
        list(engine.load("auto", None))
    assert loaded == [CPU_DEFAULT]


def test_readme_export_command_is_registered(tmp_path, capsys):
    from lora_demo.cli import main

    assert main(["export", str(tmp_path / "no-run"), "--zip", str(tmp_path / "x.zip")]) == 2
    assert "invalid choice" not in capsys.readouterr().err


def test_list_labels_and_path_errors_in_chinese(tmp_path):
    """adapter_choices renders its labels in the language it is given (the tabs pass their session's); values stay
    paths. A path error names its "what" in the same language, whether the caller passed msg() or plain English."""
    from lora_demo.i18n import joined, msg, render
    from lora_demo.paths import safe_name

    runs = tmp_path / "runs"
    make_adapter(runs / "old", status={"status": "completed", "final_loss": 1.23456}, mtime=1_000_000)
    make_adapter(runs / "new", status={"status": "stopped"}, mtime=2_000_000)
    (runs / "new" / "TRUNCATED.json").write_text("{}")
    ckpt = make_adapter(runs / "ckpt" / "checkpoints" / "checkpoint-28", mtime=3_000_000)
    (runs / "ckpt" / "data").mkdir()
    from lora_demo.train.checkpoints import MARKER

    for name, text in (
        ("adapter_model.safetensors", ""),
        ("trainer_state.json", '{"global_step": 28}'),
        (MARKER, json.dumps({"total": 66, "loss": 0.5})),
    ):
        (ckpt / name).write_text(text)
    zh = adapter_choices(runs, "zh")
    en = adapter_choices(runs)
    assert [v for _, v in zh] == [v for _, v in en]
    labels = dict((v, label) for label, v in zh)
    assert labels[str(runs / "new")] == "new · 已停止 · 秩 k 截断副本"
    assert labels[str(runs / "old")] == "old · 已完成 · 损失 1.235"
    assert labels[str(ckpt)] == "ckpt · 检查点 第 28/66 步 · 损失 0.500"
    assert dict((v, label) for label, v in en)[str(ckpt)] == "ckpt · checkpoint step 28 of 66 · loss 0.500"
    for what, shown in ((msg("dataset name"), "数据集名称"), ("dataset name", "dataset name")):
        # a nested msg is translated; a plain string is a name and stays as typed (i18n.render)
        with pytest.raises(InputError) as info:
            safe_name("../x", what)
        assert str(info.value).startswith("The dataset name '../x' is not allowed")
        assert render(info.value.args[0], "zh").startswith(f"{shown} '../x' 不可用")
    with pytest.raises(InputError) as info:
        PathPolicy([tmp_path / "runs"]).check("/etc", msg("adapter folder"))
    assert render(info.value.args[0], "zh").startswith("适配器文件夹 '/etc' 不在本应用可读取的文件夹内")
    both = msg("Fix these first: {problems}", problems=joined([msg("No run named {name!r}.", name="a"), "plain"]))
    assert both == "Fix these first: No run named 'a'.; plain"
    assert render(both, "zh") == "请先解决这些问题：没有名为 'a' 的运行。；plain"
