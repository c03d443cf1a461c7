"""Does watching the Train tab slow training? The same run from the CLI, then from the app with its page open.

    python bench/bench_watch_training.py [--max-steps N] [--model ID] [--variants cli,app,browser] [--json]

Variants, run one after another on this machine (never in parallel: on 2 cores they would compete):
- cli:     `python -m lora_demo train` with the Train tab's defaults (the plain baseline);
- app:     `app.py` serving, the run started through the `/train_start` endpoint, no page open (server cost);
- browser: `app.py` serving, headless Chromium on the Train tab pressing "Start training" and watching it to the
           end (server + page cost: what a user gets).
Each reports the wall time from the worker's start to its end (status.json) and the steady seconds per step
(progress.jsonl). The figure that matters is browser / cli.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CHROMIUM = "/usr/bin/chromium"


def run_figures(run_dir: Path) -> dict:
    """Wall time and steady s/step of a finished run, from the files the worker wrote."""
    from lora_demo.train.runs import read_progress, read_status

    st = read_status(run_dir)
    logs = [p for p in read_progress(run_dir) if p.get("type") == "log"]
    steps = [b["time"] - a["time"] for a, b in zip(logs, logs[1:], strict=False) if b["step"] > a["step"]]
    return {
        "status": st.get("status"),
        "steps": st.get("step"),
        "wall_s": round(st["ended"] - st["started"], 1) if st.get("ended") and st.get("started") else None,
        "train_s": round(logs[-1]["time"] - logs[0]["time"], 1) if len(logs) > 1 else None,
        "median_s_per_step": round(statistics.median(steps), 3) if steps else None,
        "final_loss": st.get("final_loss"),
    }


def cli_run(work: Path, model: str, max_steps: int | None) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "lora_demo",
        "train",
        "--runs-dir",
        str(work / "runs"),
        "--data-dir",
        str(work / "data"),
        "--model",
        model,
    ]
    if max_steps:
        cmd += ["--max-steps", str(max_steps)]
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    (run_dir,) = [p.parent for p in (work / "runs").glob("*/status.json")]
    return run_figures(run_dir)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(work: Path, model: str) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    log = open(work / "app.log", "w")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        [
            sys.executable,
            "app.py",
            "--port",
            str(port),
            "--model",
            model,
            "--runs-dir",
            str(work / "runs"),
            "--data-dir",
            str(work / "data"),
        ],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError((work / "app.log").read_text()) from None
            time.sleep(0.5)
    raise TimeoutError("the app did not start")


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes so far (not their children: the worker is counted apart)."""
    import psutil

    total = 0.0
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return round(total, 1)


def chromium_pids() -> list[int]:
    import psutil

    return [p.pid for p in psutil.process_iter(["name"]) if "chrom" in (p.info["name"] or "")]


def wait_done(work: Path, timeout: float = 3600) -> Path:
    from lora_demo.train.runs import FINAL, read_status

    deadline = time.time() + timeout
    while time.time() < deadline:
        done = [p.parent for p in (work / "runs").glob("*/status.json") if read_status(p.parent).get("status") in FINAL]
        if done:
            return done[0]
        time.sleep(1)
    raise TimeoutError("the run did not finish")


def app_run(work: Path, model: str, max_steps: int | None) -> dict:
    """The run started through the API with the tab's defaults; no page is open while it trains."""
    from gradio_client import Client

    proc, url = start_app(work, model)
    try:
        client = Client(url, verbose=False)
        info = client.view_api(return_format="dict", print_info=False)["named_endpoints"]["/train_start"]
        values = {p["parameter_name"]: p["parameter_default"] for p in info["parameters"]}
        if max_steps:
            values["max_steps"] = max_steps
        client.predict(*values.values(), api_name="/train_start")
        fig = run_figures(wait_done(work))
        fig["app_cpu_s"] = cpu_seconds([proc.pid])
        return fig
    finally:
        proc.terminate()
        proc.wait(20)


def browser_run(work: Path, model: str, max_steps: int | None) -> dict:
    """What a user gets: the Train tab open in Chromium, Start pressed, the page watched to the end."""
    from playwright.sync_api import sync_playwright

    proc, url = start_app(work, model)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=CHROMIUM,
                args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"],
            )
            page = browser.new_page(viewport={"width": 1400, "height": 1000}, locale="en-US")
            page.set_default_timeout(120_000)
            page.goto(url)
            page.get_by_role("tab", name="Train", exact=True).click()
            if max_steps:
                page.get_by_label("max steps (-1: epochs)").fill(str(max_steps))
            page.get_by_role("button", name="Start training", exact=True).click()
            page.locator("#train-progress[data-stage='completed']").wait_for(timeout=3_600_000)
            cpu = {"app_cpu_s": cpu_seconds([proc.pid]), "chromium_cpu_s": cpu_seconds(chromium_pids())}
            browser.close()
        return {**run_figures(wait_done(work)), **cpu}
    finally:
        proc.terminate()
        proc.wait(20)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="auto", help="model id ('auto': this device's default, as the Train tab)")
    ap.add_argument("--max-steps", type=int, default=None, help="cut the run short (default: the tab's full run)")
    ap.add_argument("--variants", default="cli,browser", help="comma-separated: cli, app, browser")
    ap.add_argument("--json", action="store_true", help="end with one JSON line of all figures")
    args = ap.parse_args()
    from lora_demo.models import resolve_model

    model = resolve_model(args.model)
    result = {"model": model, "max_steps": args.max_steps}
    runners = {"cli": cli_run, "app": app_run, "browser": browser_run}
    for name in args.variants.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            fig = runners[name](Path(tmp), model, args.max_steps)
            fig["total_s"] = round(time.perf_counter() - t0, 1)
        result[name] = fig
        cpu = "".join(f", {k} {fig[k]}" for k in ("app_cpu_s", "chromium_cpu_s") if k in fig)
        print(
            f"{name:8s} {fig['steps']} steps, worker {fig['wall_s']} s, training {fig['train_s']} s, "
            f"median {fig['median_s_per_step']} s/step, final loss {fig['final_loss']}{cpu}",
            flush=True,
        )
    base = result.get("cli", {}).get("train_s")
    for name in ("app", "browser"):
        if base and result.get(name, {}).get("train_s"):
            result[f"{name}_vs_cli"] = round(result[name]["train_s"] / base, 3)
            print(f"{name} / cli training time: {result[f'{name}_vs_cli']:.3f}x (target ≤ 1.15x)")
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
