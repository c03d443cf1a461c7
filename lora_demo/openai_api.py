"""An OpenAI-compatible endpoint on the app's own server and port: `GET /v1/models`, `POST /v1/chat/completions`.

Any OpenAI client (the `openai` package, curl, tools that take a base URL) can chat with a base model or with any
adapter the Chat tab's lists offer, by the name the lists use (`tiny-chat`, `tiny-chat/checkpoint-40`) or by its
folder. A request runs through the same path as the Chat tab's Send (LabEngine.chat_stream: the base loaded once,
the adapter attached, generation serialized per model, each request its own adapter and its own stop), on a thread
of its own so the server's event loop never waits; a client that goes away stops its generation. The defaults are
the Chat tab's (GenSettings: temperature 0.7, top-p 0.9, top-k 50, repetition penalty 1.1, 256 new tokens, seed
0); `temperature: 0` is the page's greedy mode, so the answer is the page's (and `python -m lora_demo chat
--greedy`'s) for the same prompt.

Gradio's app takes no routes after launch, so lora_demo/guard.py (the ASGI middleware every LoRA Lab server has)
hands `/v1/...` to `OpenAIApp`, a plain ASGI app. Keys: with a login (`--auth`, `--share`) every request needs
`Authorization: Bearer KEY` (`--api-key`, else `$LORA_LAB_API_KEY`, else one generated and printed at start:
lora_demo/launch.py); without a login none is needed unless `--api-key` is given. Errors are OpenAI's shape,
`{"error": {"message", "type", "param", "code"}}`, one line, never a traceback. Messages stay English (an API).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import math
import threading
import time
import uuid
from pathlib import Path

from lora_demo.adapters import adapter_choices
from lora_demo.chat.engine import GenSettings, flatten_content
from lora_demo.errors import LoraLabError
from lora_demo.models import REGISTRY, is_available_offline
from lora_demo.models.registry import adapter_base_model
from lora_demo.rundir import CHECKPOINT_PREFIX, CHECKPOINTS, AdapterDir

PREFIX = "/v1"
MAX_BODY = 4 * 2**20  # bytes of one request's JSON
OWNER = "lora-lab"


class ApiError(Exception):
    """An answer other than 200, in OpenAI's error shape."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        param: str | None = None,
        kind: str = "invalid_request_error",
    ):
        super().__init__(message)
        self.status, self.message, self.code, self.param, self.kind = status, message, code, param, kind

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


# --- the models a client may name ----------------------------------------------------------------------------------


def adapter_names(runs_dir: str | Path) -> dict[str, str]:
    """Every adapter the Chat and Low-rank lists offer, by the name a client uses -> its folder as the lists spell
    it: a run's (or a truncated copy's) folder inside the runs folder (`tiny-chat`), a checkpoint as
    `<run>/checkpoint-N`. Newest first, as the lists order them; the first of two equal names wins."""

    root, names = Path(runs_dir), {}
    for _label, folder in adapter_choices(root):
        rel = Path(folder).relative_to(root)
        parts = rel.parts
        if len(parts) >= 3 and parts[-2] == CHECKPOINTS and parts[-1].startswith(CHECKPOINT_PREFIX):
            name = Path(*parts[:-2], parts[-1]).as_posix()
        else:
            name = rel.as_posix()
        names.setdefault(name, folder)
    return names


def base_ids(lab) -> list[str]:
    """The base models a client may name: those loaded now, this app's default, and every registry model that
    loads here without a download."""

    ids = [e.model_id for e in lab.chat.loaded() if e.model_id]
    ids.append(lab.default_model)
    ids += [m for m in REGISTRY if is_available_offline(m)]
    return list(dict.fromkeys(ids))


def list_models(lab) -> list[dict]:
    """/v1/models' entries: the base models, then the adapters (each with its base as `parent`)."""

    now = int(time.time())
    out = [
        {"id": m, "object": "model", "created": now, "owned_by": OWNER, "root": m, "parent": None}
        for m in base_ids(lab)
    ]
    for name, folder in adapter_names(lab.runs_dir).items():
        try:
            created = int(AdapterDir(folder).adapter_config_path.stat().st_mtime)
        except OSError:  # deleted while listing
            continue
        out.append(
            {
                "id": name,
                "object": "model",
                "created": created,
                "owned_by": OWNER,
                "root": name,
                "parent": adapter_base_model(folder),
            }
        )
    return out


def resolve_model(lab, name) -> tuple[str, str | None]:
    """(base id or 'auto', adapter folder or None) a request's `model` names: an adapter by its list name, a base
    model id, or a folder (an adapter, or a local model) inside the folders this app may read. Else 404, listing
    the names."""

    if not isinstance(name, str) or not name.strip():
        raise ApiError(
            400,
            "'model' is required: a base model id or an adapter name (GET /v1/models lists them).",
            "invalid_value",
            "model",
        )
    name = name.strip()
    adapters = adapter_names(lab.runs_dir)
    if name in adapters:
        return "auto", adapters[name]
    bases = base_ids(lab)
    if name in bases or name in REGISTRY:
        return name, None
    try:
        path = lab.policy.check(name)
    except LoraLabError:
        path = None
    if path is not None and path.is_dir():
        if AdapterDir(path).has_adapter_config():
            return "auto", name  # the engine checks the folder again, as it does the page's
        if (path / "config.json").is_file():
            return name, None
    names = ", ".join([*bases, *adapters])
    raise ApiError(404, f"The model {name!r} does not exist here. Available: {names}.", "model_not_found", "model")


# --- a request --------------------------------------------------------------------------------------------------


def _number(body: dict, key: str, default, lo, hi, whole: bool = False):
    """body[key] checked to be a number from lo to hi (whole when asked), or the default when absent."""
    v = body.get(key)
    if v is None:
        return default
    ok = not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)
    if not (ok and lo <= v <= hi and (not whole or float(v).is_integer())):
        kind = "a whole number" if whole else "a number"
        raise ApiError(400, f"'{key}' must be {kind} from {lo} to {hi}; got {v!r}.", "invalid_value", key)
    return int(v) if whole else float(v)


def _history(messages) -> tuple[list[dict], str]:
    """(the user/assistant turns, the system prompt) of `messages`; 400 naming what is wrong."""
    if not isinstance(messages, list) or not messages:
        raise ApiError(
            400, "'messages' must be a non-empty list of {role, content} objects.", "invalid_value", "messages"
        )
    turns, system = [], []
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise ApiError(400, f"'{where}' must be an object with 'role' and 'content'.", "invalid_value", where)
        role, content = m.get("role"), m.get("content")
        if role not in ("system", "developer", "user", "assistant"):
            raise ApiError(
                400,
                f"'{where}.role' must be system, user or assistant; got {role!r}.",
                "invalid_value",
                f"{where}.role",
            )
        if isinstance(content, list):
            for j, part in enumerate(content):
                if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                    raise ApiError(
                        400,
                        f'\'{where}.content[{j}]\' must be a text part ({{"type": "text", "text": '
                        "...}): this endpoint reads text only.",
                        "invalid_value",
                        f"{where}.content",
                    )
        elif content is not None and not isinstance(content, str):
            raise ApiError(
                400, f"'{where}.content' must be a string or a list of text parts.", "invalid_value", f"{where}.content"
            )
        text = flatten_content(content)
        if role in ("system", "developer"):
            system.append(text)
        else:
            turns.append({"role": role, "content": text})
    if not turns or turns[-1]["role"] != "user" or not turns[-1]["content"].strip():
        raise ApiError(
            400, "The last message of 'messages' must be the user's, with some text.", "invalid_value", "messages"
        )
    return turns, "\n\n".join(s for s in system if s)


def parse_chat(body) -> dict:
    """A /v1/chat/completions body checked: messages, generation settings (the Chat tab's defaults for what is not
    given), stream, stop; 400 naming the first bad field."""
    if not isinstance(body, dict):
        raise ApiError(400, "The request body must be a JSON object.", "invalid_value")
    history, system = _history(body.get("messages"))
    d = GenSettings()  # the Chat tab's defaults (tests/test_openai_api.py holds them equal to its sliders)
    temperature = _number(body, "temperature", d.temperature, 0, 2)
    max_tokens = body.get("max_completion_tokens")
    max_tokens = _number(
        body, "max_completion_tokens" if max_tokens is not None else "max_tokens", d.max_new_tokens, 1, 4096, whole=True
    )
    gen = GenSettings(
        max_new_tokens=max_tokens,
        greedy=temperature < 0.01,  # 0: the page's greedy mode (its other settings stay the page's defaults)
        temperature=temperature if temperature >= 0.01 else d.temperature,
        top_p=max(_number(body, "top_p", d.top_p, 0, 1), 0.01),
        top_k=_number(body, "top_k", d.top_k, 0, 1000, whole=True),
        repetition_penalty=_number(body, "repetition_penalty", d.repetition_penalty, 0.5, 3),
        seed=_number(body, "seed", d.seed, 0, 2**32 - 1, whole=True),
        min_new_tokens=_number(body, "min_tokens", 0, 0, max_tokens, whole=True),  # (vLLM's extension: benches)
    )
    if body.get("n") not in (None, 1):
        raise ApiError(400, f"'n' must be 1 (one answer per request); got {body.get('n')!r}.", "invalid_value", "n")
    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else stop if stop is not None else []
    if not isinstance(stops, list) or len(stops) > 4 or not all(isinstance(s, str) and s for s in stops):
        raise ApiError(400, "'stop' must be a string or a list of up to 4 non-empty strings.", "invalid_value", "stop")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise ApiError(400, "'stream' must be true or false.", "invalid_value", "stream")
    options = body.get("stream_options") or {}
    kwargs = body.get("chat_template_kwargs") or {}
    think = kwargs.get("enable_thinking", body.get("enable_thinking", False)) if isinstance(kwargs, dict) else False
    if not isinstance(think, bool):
        raise ApiError(400, "'enable_thinking' must be true or false.", "invalid_value", "enable_thinking")
    return {
        "history": history,
        "system": system,
        "gen": gen,
        "stops": stops,
        "stream": stream,
        "usage": isinstance(options, dict) and options.get("include_usage") is True,
        "think": think,
    }


def _visible(text: str, final: bool, stops: list[str]) -> tuple[str, bool]:
    """(the part of the answer a client may be sent now, whether a stop string ended it). Until the end, a tail
    that may still change is held back: a character not complete yet (U+FFFD) or the start of a stop string."""
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    if hits:
        return text[: min(hits)], True
    if final:
        return text, False
    cut = len(text)
    while cut and text[cut - 1] == "\ufffd":
        cut -= 1
    hold = max((k for s in stops for k in range(1, len(s)) if text[:cut].endswith(s[:k])), default=0)
    return text[: cut - hold], False


# --- generation on a thread of its own -----------------------------------------------------------------------------


def _produce(lab, model_id: str, adapter: str | None, req: dict, stop: threading.Event, put) -> None:
    """Run one request through LabEngine.chat_stream (the page's Send path, one row: the adapter's, or the base's
    when none is named; it shares a batch with other requests) and put ("answer", (text, tokens, done)) snapshots,
    ("prompt", n), ("error", exc) and finally ("end", None)."""
    row = 0
    stream = None
    try:
        stream = lab.chat_stream(
            model_id,
            [adapter] if adapter else [],
            [req["history"]],
            req["system"],
            req["gen"],
            enable_thinking=req["think"],
            every_s=0.0,
            stop=stop,
            with_base=False,
        )
        counted = False
        for kind, value in stream:
            if stop.is_set():
                break
            if kind != "answers":
                continue
            if not counted:
                counted = True
                put(("prompt", _prompt_tokens(lab, model_id, adapter, req)))
            r = value[row]
            put(("answer", (r.text, r.tokens, r.done)))
    except Exception as e:  # noqa: BLE001 - every failure becomes one OpenAI-style error
        put(("error", e))
    finally:
        if stream is not None:
            try:
                stream.close()  # stops and joins the generation when the client left early
            except Exception:  # noqa: BLE001
                pass
        put(("end", None))


def _prompt_tokens(lab, model_id: str, adapter: str | None, req: dict) -> int:
    """The prompt's length in tokens, as the engine built it (0 when it cannot be told)."""
    try:
        base, folder = lab.chat_target(model_id, adapter)
        engine = lab.chat.get(base)
        return len(engine.prompt_ids(req["history"], req["system"], req["think"], folder)) if engine else 0
    except Exception:  # noqa: BLE001 - a count is no reason to fail an answer
        return 0


def _as_error(e: BaseException) -> ApiError:
    if isinstance(e, ApiError):
        return e
    if isinstance(e, LoraLabError):  # the engine's one-line messages (a torn adapter, a busy model, offline)
        text = str(e.args[0]) if e.args else str(e)
        return ApiError(400, " ".join(text.split()), "invalid_value")
    return ApiError(
        500, f"Internal error: {type(e).__name__}: {' '.join(str(e).split())[:500]}", None, None, "server_error"
    )


# --- the ASGI app ---------------------------------------------------------------------------------------------------


class OpenAIApp:
    """The `/v1` routes over one LabEngine. api_key: the key every request must send as `Authorization: Bearer`;
    None: none is needed, unless `login` (the app has a login but no key was set: then every request is refused)."""

    def __init__(self, lab, api_key: str | None = None, login: bool = False):
        self.lab, self.api_key, self.login = lab, api_key, login

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return
        try:
            self._authorize(scope)
            path, method = scope.get("path", "").rstrip("/"), scope.get("method", "GET")
            if path == PREFIX + "/models" and method in ("GET", "HEAD"):
                data = await asyncio.to_thread(list_models, self.lab)
                return await _json(send, 200, {"object": "list", "data": data})
            if path.startswith(PREFIX + "/models/") and method in ("GET", "HEAD"):
                wanted = path[len(PREFIX + "/models/") :]
                data = await asyncio.to_thread(list_models, self.lab)
                found = next((m for m in data if m["id"] == wanted), None)
                if found is None:
                    raise ApiError(404, f"The model {wanted!r} does not exist here.", "model_not_found", "model")
                return await _json(send, 200, found)
            if path == PREFIX + "/chat/completions":
                if method != "POST":
                    raise ApiError(405, "Use POST for /v1/chat/completions.", "method_not_allowed")
                return await self._chat(scope, receive, send)
            raise ApiError(
                404,
                f"No route {method} {scope.get('path')}: this server offers GET /v1/models and "
                "POST /v1/chat/completions.",
                "unknown_url",
            )
        except ApiError as e:
            try:
                return await _json(send, e.status, e.body())
            except OSError:  # the client is gone
                return

    def _authorize(self, scope) -> None:
        if self.api_key is None and not self.login:
            return
        given = ""
        for k, v in scope.get("headers") or []:
            if k == b"authorization":
                scheme, _, token = v.decode("latin-1").strip().partition(" ")
                given = token.strip() if scheme.lower() == "bearer" else ""
        if self.api_key is None:
            raise ApiError(
                401,
                "This app has a login and no API key: start it with --api-key KEY (or "
                "$LORA_LAB_API_KEY) to use the API.",
                "invalid_api_key",
                kind="authentication_error",
            )
        if not given:
            raise ApiError(
                401,
                "Missing API key: send the header 'Authorization: Bearer KEY' (the key the app "
                "printed at start, or its --api-key).",
                "invalid_api_key",
                kind="authentication_error",
            )
        if not hmac.compare_digest(given.encode("utf-8", "replace"), self.api_key.encode("utf-8")):
            raise ApiError(401, "Incorrect API key.", "invalid_api_key", kind="authentication_error")

    async def _chat(self, scope, receive, send) -> None:
        raw = await _read_body(receive)
        try:
            body = json.loads(raw or b"null")
        except (ValueError, RecursionError):
            raise ApiError(400, "The request body is not valid JSON.", "invalid_json") from None
        if not isinstance(body, dict):
            raise ApiError(400, "The request body must be a JSON object.", "invalid_value")
        name = body.get("model")
        req = parse_chat(body)
        model_id, adapter = await asyncio.to_thread(resolve_model, self.lab, name)
        name = name.strip()

        loop = asyncio.get_running_loop()
        items: asyncio.Queue = asyncio.Queue()
        stop = threading.Event()

        def put(item):
            try:
                loop.call_soon_threadsafe(items.put_nowait, item)
            except RuntimeError:  # the server's loop is gone (shutdown): nobody is listening
                stop.set()

        threading.Thread(
            target=_produce, args=(self.lab, model_id, adapter, req, stop, put), daemon=True, name="openai-request"
        ).start()
        gone = asyncio.ensure_future(_disconnected(receive))
        try:
            if req["stream"]:
                await _stream(send, items, gone, stop, req, name)
            else:
                await _complete(send, items, gone, stop, req, name)
        finally:
            stop.set()  # a client that left, an error, or done: the thread ends at the next token
            gone.cancel()


async def _next(items: asyncio.Queue, gone: asyncio.Future, stop: threading.Event):
    """The next item from the generation thread, or None when the client disconnected (its generation stopped)."""
    get = asyncio.ensure_future(items.get())
    await asyncio.wait({get, gone}, return_when=asyncio.FIRST_COMPLETED)
    if get.done():
        return get.result()
    get.cancel()
    stop.set()
    return None


def _ids(name: str) -> dict:
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "created": int(time.time()),
        "model": name,
        "system_fingerprint": None,
    }


def _finish(tokens: int, req: dict, stopped: bool) -> str:
    return "length" if not stopped and tokens >= req["gen"].max_new_tokens else "stop"


async def _complete(send, items, gone, stop, req, name) -> None:
    """A non-streamed answer: one chat.completion object once generation ends."""
    text, tokens, prompt, stopped = "", 0, 0, False
    while True:
        item = await _next(items, gone, stop)
        if item is None:
            return  # the client left
        kind, value = item
        if kind == "end":
            break
        if kind == "error":
            raise _as_error(value)
        if kind == "prompt":
            prompt = value
        elif kind == "answer":
            shown, hit = _visible(value[0], True, req["stops"])
            text, tokens = shown, value[1]
            if hit:
                stopped = True
                stop.set()
    usage = {"prompt_tokens": prompt, "completion_tokens": tokens, "total_tokens": prompt + tokens}
    await _json(
        send,
        200,
        {
            **_ids(name),
            "object": "chat.completion",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "logprobs": None,
                    "finish_reason": _finish(tokens, req, stopped),
                }
            ],
            "usage": usage,
        },
    )


SSE_HEADERS = ((b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache"))


class _EventStream:
    """One streamed answer's server-sent events: the response's head (once), chat.completion.chunk events, and
    whether the head has gone out (after it an error can only be an event)."""

    def __init__(self, send, head: dict):
        self.send, self.head, self.started = send, head, False

    async def event(self, data) -> None:
        payload = data if isinstance(data, bytes) else json.dumps(data, ensure_ascii=False).encode()
        await self.send({"type": "http.response.body", "body": b"data: " + payload + b"\n\n", "more_body": True})

    def chunk(self, delta: dict, finish=None) -> dict:
        return {
            **self.head,
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }

    async def start(self, headers: list) -> None:
        """The 200 response's head, then the first chunk, which names the role."""
        self.started = True
        await self.send({"type": "http.response.start", "status": 200, "headers": headers})
        await self.event(self.chunk({"role": "assistant", "content": ""}))


async def _stream(send, items, gone, stop, req, name) -> None:
    """A streamed answer: server-sent events, chat.completion.chunk objects with the new text as delta.content,
    then (stream_options.include_usage) one with the usage, then `data: [DONE]`. An error before the first token
    is a plain error answer; one after it, an event with an `error` object."""
    sse = _EventStream(send, _ids(name))
    try:
        counts = await _stream_answer(sse, items, gone, stop, req)
        if counts is None:
            return  # the client left
        await _stream_end(sse, req, *counts)
    except OSError:  # the connection broke while sending
        stop.set()


async def _stream_answer(sse: _EventStream, items, gone, stop, req) -> tuple[int, int, bool] | None:
    """The answer's new text as chunks until it ends: (answer tokens, prompt tokens, whether a stop sequence ended
    it), or None when the client left. An error before the first token is raised; one after it is an event."""
    sent, tokens, prompt, stopped = "", 0, 0, False
    while True:
        item = await _next(items, gone, stop)
        if item is None:
            return None
        kind, value = item
        if kind == "end":
            break
        if kind == "error":
            err = _as_error(value)
            if not sse.started:
                raise err
            await sse.event(err.body())
            break
        if kind == "prompt":
            prompt = value
            continue
        if kind != "answer" or stopped:
            continue
        if not sse.started:
            await sse.start([*SSE_HEADERS, (b"x-accel-buffering", b"no")])
        text, tokens, done = value
        shown, hit = _visible(text, done, req["stops"])
        if hit:
            stopped = True
            stop.set()
        if len(shown) > len(sent):
            await sse.event(sse.chunk({"content": shown[len(sent) :]}))
            sent = shown
    return tokens, prompt, stopped


async def _stream_end(sse: _EventStream, req, tokens: int, prompt: int, stopped: bool) -> None:
    """The stream's last events: the finish reason, the usage when asked for, `[DONE]`; then the body ends."""
    if not sse.started:  # nothing generated (an empty answer): still one whole stream
        await sse.start(list(SSE_HEADERS))
    await sse.event(sse.chunk({}, _finish(tokens, req, stopped)))
    if req["usage"]:
        usage = {"prompt_tokens": prompt, "completion_tokens": tokens, "total_tokens": prompt + tokens}
        await sse.event({**sse.head, "object": "chat.completion.chunk", "choices": [], "usage": usage})
    await sse.event(b"[DONE]")
    await sse.send({"type": "http.response.body", "body": b"", "more_body": False})


async def _read_body(receive) -> bytes:
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ApiError(400, "The client went away before the request was read.", "disconnected")
        body.extend(message.get("body", b""))
        if len(body) > MAX_BODY:
            raise ApiError(413, f"The request body is over {MAX_BODY // 2**20} MB.", "request_too_large")
        if not message.get("more_body"):
            return bytes(body)


async def _disconnected(receive) -> None:
    """Returns when the client disconnects (after the request body, the server's receive waits for just that)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def _json(send, status: int, data) -> None:
    body = json.dumps(data, ensure_ascii=False).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


class NoEngine:
    """The /v1 answer of a server whose Gradio app is not LoRA Lab's (no LabEngine to chat with)."""

    async def __call__(self, scope, receive, send):
        err = ApiError(404, "This server has no LoRA Lab engine behind /v1.", "unknown_url")
        await _json(send, err.status, err.body())
