"""Shared test setup: no network, ever; GPU tests skip without CUDA."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import pytest  # noqa: E402


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def app_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("app")
    (root / "runs").mkdir()
    (root / "data").mkdir()
    return root


@pytest.fixture(scope="session")
def app_client(app_dirs):
    """The real app, launched once per test session, and a gradio_client connected to it."""
    from gradio_client import Client

    from lora_demo.guard import server_options
    from lora_demo.ui import AppSettings, build_app

    demo = build_app(AppSettings(runs_dir=app_dirs / "runs", data_dir=app_dirs / "data"))
    demo.queue(default_concurrency_limit=None)
    demo.launch(
        prevent_thread_lock=True,
        server_name="127.0.0.1",
        server_port=None,
        ssr_mode=False,
        quiet=True,
        show_error=True,
        **server_options(app_dirs / "runs"),
    )
    try:
        yield Client(demo.local_url, verbose=False)
    finally:
        demo.close()


@pytest.fixture(scope="session")
def tiny_run(app_dirs):
    """A short qwen3-tiny run on the persona rows (Qwen3 chat template, thinking off), in the app's runs folder."""
    from lora_demo.train.runner import Runner
    from lora_demo.train.settings import TrainSettings

    runner = Runner(app_dirs / "runs", app_dirs / "data")
    s = TrainSettings(
        model="qwen3-tiny",
        dataset="example:persona",
        template="chat",
        max_seq_length=128,
        micro_batch_size=4,
        warmup=2,
        learning_rate=5e-3,
        max_steps=40,
        val_fraction=0.1,
        run_name="tiny-chat",
    )
    run_dir = runner.start(s)
    assert runner.wait(300)["status"] == "completed"
    return run_dir


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the test item (the browser tests screenshot on failure)."""
    outcome = yield
    setattr(item, f"rep_{call.when}", outcome.get_result())
