"""Start LoRA Lab: `lora-lab [--host H] [--port P] [--share] [--auth USER:PASS] [--api-key KEY] [--lang en|zh] ...`.

The `lora-lab` console script (pyproject.toml) runs `main`; `python app.py` in a checkout runs the same.
"""

from __future__ import annotations

import argparse
import secrets
import sys
from pathlib import Path

from lora_demo import env
from lora_demo.data.formats import MAX_UPLOAD_MB
from lora_demo.device import one_thread_outside_chat
from lora_demo.guard import server_options
from lora_demo.ui import AppSettings, build_app


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="LoRA Lab web app")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 for the LAN)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--share", action="store_true", help="open a temporary public Gradio link (turns auth on)")
    p.add_argument(
        "--auth",
        metavar="USER:PASS",
        default=env.auth(),
        help="require this login (also from $LORA_LAB_AUTH)",
    )
    p.add_argument("--no-auth", action="store_true", help="with --share: allow anyone with the link in (unsafe)")
    p.add_argument(
        "--api-key",
        metavar="KEY",
        default=None,
        help="the key the OpenAI-compatible endpoint (/v1) asks for as 'Authorization: Bearer KEY'; with a "
        "login the default is $LORA_LAB_API_KEY, else one generated and printed; without a login no "
        "key is needed unless this is given",
    )
    p.add_argument(
        "--lang",
        choices=("en", "zh"),
        default=None,
        help="the page's language (English or 简体中文; default: the browser's), switchable on the page",
    )
    p.add_argument("--model", default="auto", help="default model id or folder ('auto': by device)")
    p.add_argument("--runs-dir", default="runs", help="where training runs and adapters are saved")
    p.add_argument("--data-dir", default="data", help="where datasets are saved")
    p.add_argument(
        "--allow-dir",
        action="append",
        default=[],
        metavar="FOLDER",
        help="another folder the browser may name (local models, adapters, datasets); repeatable",
    )
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def resolve_auth(args: argparse.Namespace) -> tuple[str, str] | None:
    """Login for the app: given, generated for --share, or none for a local-only app."""
    if args.auth:
        user, sep, password = args.auth.partition(":")
        if not sep or not user or not password:
            sys.exit("error: --auth must be USER:PASS, e.g. --auth alice:s3cret")
        return user, password
    if args.share and not args.no_auth:
        password = secrets.token_urlsafe(12)
        print(f"Public link is protected: log in as  user: lora   password: {password}", flush=True)
        return "lora", password
    if args.share:
        print("WARNING: --share with --no-auth: ANYONE with the link can use this app and this machine.", flush=True)
    return None


def resolve_api_key(args: argparse.Namespace, auth) -> str | None:
    """The key of the OpenAI-compatible endpoint: --api-key; with a login, else $LORA_LAB_API_KEY, else generated
    and printed; without a login none (the endpoint is as open as the page)."""
    if args.api_key is not None:
        if not args.api_key.strip():
            sys.exit("error: --api-key must not be empty")
        return args.api_key.strip()
    if auth is None:
        return None
    if key := env.api_key():
        return key
    key = "sk-lora-" + secrets.token_urlsafe(24)
    print(f"OpenAI-compatible endpoint (/v1) key:  {key}", flush=True)
    return key


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    one_thread_outside_chat()  # the chat's generation thread alone computes on every core
    auth = resolve_auth(args)
    api_key = resolve_api_key(args, auth)
    settings = AppSettings(
        model=args.model,
        runs_dir=Path(args.runs_dir),
        data_dir=Path(args.data_dir),
        allow_dirs=[Path(d) for d in args.allow_dir],
        shared=args.share or args.host not in ("127.0.0.1", "localhost", "::1"),
    )
    # (shared: the engine's Runner refuses python rewards, code from a file, when a run starts or resumes)
    demo = build_app(settings, lang=args.lang)
    demo.queue(default_concurrency_limit=None)
    demo.launch(
        server_name=args.host,
        server_port=args.port,
        share=args.share,
        auth=auth,
        ssr_mode=False,
        show_error=True,
        # show_error: input that fails Gradio's own validation (before any handler runs) gets its message
        # ("Input should be a valid list") instead of "the app has raised an exception". Handler errors are
        # already one-line gr.Errors (ui.common.friendly); neither path sends a traceback.
        # Gradio serves files only from its cache and the runs folder (exports are written under runs/), never
        # through a symlink, and shows nothing before login (lora_demo/guard.py).
        # /v1: the OpenAI-compatible endpoint (lora_demo/openai_api.py), its key from resolve_api_key.
        max_file_size=f"{MAX_UPLOAD_MB:g}mb",
        **server_options(settings.runs_dir, api_key=api_key),
    )


if __name__ == "__main__":
    main()
