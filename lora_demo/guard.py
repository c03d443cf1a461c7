"""What a visitor reaches before logging in, and which files the web server hands out.

Gradio protects its config, API and file routes with the login, but its index route (`GET /`) embeds the API
description (every endpoint and its parameters) for a visitor who is not logged in, and its file route resolves
symlinks before checking the allowed folders. LoRA Lab's rule for a shared link is stricter: nothing of the app
or the user's work is visible without the login, and no file is served through a link. Gradio has no option for
either, so this ASGI middleware (added through launch's app_kwargs, before the server starts) does both:
- `GET /` before login: the page keeps Gradio's login form, with an empty API description;
- `GET /gradio_api/file=PATH`: refused when PATH or a folder on its way is a symlink;
- `/v1/...`: handed to the OpenAI-compatible endpoint (lora_demo/openai_api.py) over the app's LabEngine, which
  checks its own API key (Gradio's app takes no routes after launch, and its login is a cookie).
Lists of runs and datasets are not in the built page at all (the tabs fill them per session, see ui/), so even
without a login nothing names the user's work.
"""

from __future__ import annotations

import os
import re
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import unquote

from lora_demo.openai_api import NoEngine, OpenAIApp

# The one place the index template embeds the API description (gradio/templates/frontend/index.html, share.html).
_API_INFO = re.compile(rb"window\.gradio_api_info = .*?;</script>", re.S)
_EMPTY_API = b'window.gradio_api_info = {"named_endpoints": {}, "unnamed_endpoints": {}};</script>'
_FILE_ROUTE = "/gradio_api/file="
_OPENAI = re.compile(r"^/v1(/|$)")


def logged_in(app, scope) -> bool:
    """Whether the request carries a login of this Gradio app (its own cookie check), or the app needs none."""
    if getattr(app, "auth", None) is None and getattr(app, "auth_dependency", None) is None:
        return True
    if getattr(app, "auth_dependency", None) is not None:
        return False  # the index route itself answers 401 then; nothing to strip
    cookie = SimpleCookie()
    for name, value in scope.get("headers") or []:
        if name == b"cookie":
            try:
                cookie.load(value.decode("latin-1"))
            except Exception:  # noqa: BLE001 - a malformed cookie header is simply no login
                return False
    cid = getattr(app, "cookie_id", "")
    for key in (f"access-token-{cid}", f"access-token-unsecure-{cid}"):
        if key in cookie and app.tokens.get(cookie[key].value) is not None:
            return True
    return False


def linked(path: str) -> bool:
    """Whether a file route's path is, or passes through, a symbolic link (checked below the file system root,
    the way Gradio reads the path: relative to the working directory)."""
    p = Path(os.path.abspath(path))
    return any(q.is_symlink() for q in [p, *p.parents][:-1] if q != Path(os.path.abspath(os.sep)))


class Guard:
    """The ASGI middleware: see the module docstring."""

    def __init__(self, app, allow_linked_roots: tuple[str, ...] = (), api_key: str | None = None):
        self.app = app
        # Folders whose own path may contain links (e.g. /tmp -> /private/tmp on macOS, a runs folder the operator
        # placed behind a link); links below them are still refused.
        self.roots = tuple(os.path.abspath(r) for r in allow_linked_roots)
        self.api_key = api_key  # the OpenAI-compatible endpoint's key (None: none, unless the app has a login)
        self.openai = None  # made at the first /v1 request, over the built app's LabEngine

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and _OPENAI.match(scope.get("path", "")):
            return await self._openai(scope.get("app"))(scope, receive, send)
        if scope["type"] != "http" or scope.get("method") not in ("GET", "HEAD"):
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        if path.startswith(_FILE_ROUTE) and self._refused(unquote(path[len(_FILE_ROUTE) :])):
            return await _plain(send, 403, b"Not served: LoRA Lab serves no file through a symbolic link.")
        gradio_app = scope.get("app")
        if path.rstrip("/") in ("", "/gradio_api/runs") and not logged_in(gradio_app, scope):
            return await self.app(scope, receive, _stripping(send))
        return await self.app(scope, receive, send)

    def _openai(self, gradio_app):
        """The /v1 app over the LabEngine of the Blocks this server runs (build_app sets `demo.lab`)."""
        if self.openai is None:
            try:
                lab = getattr(gradio_app.get_blocks(), "lab", None)
            except Exception:  # noqa: BLE001 - not a Gradio app of LoRA Lab
                lab = None
            if lab is None:
                return NoEngine()
            login = getattr(gradio_app, "auth", None) is not None or getattr(gradio_app, "auth_dependency", None)
            self.openai = OpenAIApp(lab, self.api_key, login=bool(login))
        return self.openai

    def _refused(self, path: str) -> bool:
        if path.startswith(("http://", "https://")):
            return False  # Gradio's own proxy rules apply
        full = os.path.abspath(path)
        for root in self.roots:
            if full == root or full.startswith(root.rstrip(os.sep) + os.sep):
                rest = Path(full[len(root) :].lstrip(os.sep))
                return any((Path(root) / q).is_symlink() for q in [rest, *rest.parents][:-1])
        return linked(full)


def _stripping(send):
    """A send that buffers an HTML answer and replaces its embedded API description with an empty one."""
    start: dict = {}
    body = bytearray()

    async def wrapped(message):
        if message["type"] == "http.response.start":
            start.update(message)
            return
        if message["type"] != "http.response.body":
            return await send(message)
        body.extend(message.get("body", b""))
        if message.get("more_body"):
            return
        data = _API_INFO.sub(_EMPTY_API, bytes(body))
        headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(data)).encode()))
        await send({**start, "headers": headers})
        await send({"type": "http.response.body", "body": data})

    return wrapped


async def _plain(send, status: int, text: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(text)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": text})


def server_options(runs_dir: Path, linked_roots: tuple[str, ...] = (), api_key: str | None = None) -> dict:
    """The launch() options every LoRA Lab server uses (app, tests): files served only from Gradio's cache and the
    runs folder, never through a link; no API description before login; no run history kept in the browser; the
    OpenAI-compatible endpoint under /v1 (api_key: the key it asks for; see lora_demo/openai_api.py)."""
    from gradio.utils import get_upload_folder
    from starlette.middleware import Middleware

    folders = (runs_dir, get_upload_folder(), *linked_roots)
    roots = tuple(dict.fromkeys(str(f) for r in folders for f in (Path(r).absolute(), Path(r).resolve())))
    return {
        "allowed_paths": [str(Path(runs_dir).resolve())],
        "run_history": False,
        "app_kwargs": {"middleware": [Middleware(Guard, allow_linked_roots=roots, api_key=api_key)]},
    }
