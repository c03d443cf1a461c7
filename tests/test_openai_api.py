"""The OpenAI-compatible endpoint (issue 26, part 4), through the official `openai` client against the real app.

- /v1/models lists the base models and every adapter the lists offer, by the lists' names.
- A greedy (temperature 0) answer is the page's greedy answer (/chat_send) and the CLI's `chat --greedy` answer;
  streamed, it arrives in chunks that add up to the same text and ends.
- Two clients naming two adapters at the same time each get their own adapter's answer.
- Keys: with a login, no key or a wrong key is 401 and the right key 200; an unknown model is 404 listing the
  names; a bad value is 400 naming it; a client that goes away stops its generation.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from tests.api_helpers import send_args, sent

PROMPT = "What is your name?"
N = 10  # new tokens: enough to tell adapters apart, few enough to be quick


def _client(url: str, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=url.rstrip("/") + "/v1", api_key=key, max_retries=0, timeout=120)


def _ask(client, model, **kw) -> str:
    kw = {"temperature": 0, "max_tokens": N, **kw}
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": PROMPT}], **kw)


@pytest.fixture(scope="module")
def api(app_client):
    return _client(app_client.src)


@pytest.fixture(scope="module")
def second_run(app_dirs, tiny_run):
    """A rank-1 copy of tiny-chat in the app's runs folder: another adapter of the same base."""
    import shutil

    from lora_demo.lowrank.adapter import truncate_adapter

    dest = app_dirs / "runs" / "oa-rank1"
    if not dest.exists():
        truncate_adapter(str(tiny_run), 1, dest)
    yield dest
    shutil.rmtree(dest, ignore_errors=True)


def test_the_defaults_are_the_chat_tabs():
    """Unset fields take the Chat tab's values (GenSettings), so temperature 0 is exactly the page's greedy mode."""
    import gradio as gr

    from lora_demo.chat.engine import GenSettings
    from lora_demo.openai_api import parse_chat
    from lora_demo.ui.chat_tab import _settings_box

    with gr.Blocks():
        _system, _think, temperature, top_p, top_k, rep, max_new, seed, scale, greedy = _settings_box()
    page = GenSettings(
        max_new_tokens=max_new.value,
        greedy=greedy.value,
        temperature=temperature.value,
        top_p=top_p.value,
        top_k=top_k.value,
        repetition_penalty=rep.value,
        seed=seed.value,
        adapter_scale=scale.value,
    )
    assert parse_chat({"messages": [{"role": "user", "content": "hi"}]})["gen"] == page
    greedy_req = parse_chat({"messages": [{"role": "user", "content": "hi"}], "temperature": 0})
    assert greedy_req["gen"] == GenSettings(**{**page.__dict__, "greedy": True})
    assert greedy_req["think"] is False  # the page's thinking switch is off


def test_models_lists_bases_and_every_adapter_by_its_list_name(api, app_dirs, tiny_run, second_run):
    from lora_demo.adapters import adapter_choices
    from lora_demo.openai_api import adapter_names

    models = {m.id: m for m in api.models.list()}
    assert "qwen3-tiny" in models and models["qwen3-tiny"].owned_by == "lora-lab"
    assert "tiny-chat" in models and "oa-rank1" in models
    assert models["tiny-chat"].model_dump().get("parent") == "qwen3-tiny"
    names = adapter_names(app_dirs / "runs")
    offered = {folder for _, folder in adapter_choices(app_dirs / "runs")}
    assert set(names.values()) == offered and set(names) <= set(models)  # every adapter of the lists, by name
    assert all("/checkpoints/" not in n for n in names)  # a checkpoint is "<run>/checkpoint-N"
    assert api.models.retrieve("tiny-chat").id == "tiny-chat"


def test_greedy_answer_is_the_pages_and_the_clis(api, app_client, tiny_run):
    from lora_demo.chat.engine import ChatEngine, GenSettings

    got = _ask(api, "tiny-chat")
    text = got.choices[0].message.content
    assert text.strip() and got.choices[0].finish_reason in ("stop", "length")
    assert got.usage.completion_tokens <= N and got.usage.prompt_tokens > 5
    # The page in greedy mode with its default settings (repetition penalty 1.1), the tuned pane's answer.
    page = sent(
        app_client.predict(
            *send_args(PROMPT, tiny_run, gen=[0.7, 0.9, 50, 1.1, N, 0, 1.0, True]), api_name="/chat_send"
        )
    )
    content = page["tuned"][-1]["content"]
    content = content if isinstance(content, str) else "".join(b.get("text", "") for b in content)
    assert content == text.strip()
    # `python -m lora_demo chat --greedy` (GenSettings' defaults but greedy; tests/test_chat_adapters.py holds the
    # CLI to this engine call).
    engine = ChatEngine()
    list(engine.load("auto", str(tiny_run)))
    try:
        assert engine.answer_pair(PROMPT, GenSettings(max_new_tokens=N, greedy=True))["tuned"] == text
    finally:
        engine.unload()
    # The folder instead of the name: the same adapter.
    assert _ask(api, str(tiny_run)).choices[0].message.content == text


def test_streaming_yields_chunks_that_add_up_and_end(api):
    whole = _ask(api, "tiny-chat").choices[0].message.content
    chunks = list(_ask(api, "tiny-chat", stream=True, stream_options={"include_usage": True}))
    deltas = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert sum(1 for d in deltas if d) >= 2 and "".join(deltas) == whole
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish in (["stop"], ["length"])
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens >= 1


def test_two_clients_with_two_adapters_each_get_their_own(app_client, second_run):
    a, b = _client(app_client.src), _client(app_client.src)
    own_a = _ask(a, "tiny-chat").choices[0].message.content
    own_b = _ask(b, "oa-rank1").choices[0].message.content
    assert own_a != own_b
    with ThreadPoolExecutor(4) as pool:
        jobs = [pool.submit(_ask, c, m) for c, m in ((a, "tiny-chat"), (b, "oa-rank1")) * 2]
        answers = [j.result().choices[0].message.content for j in jobs]
    assert answers == [own_a, own_b] * 2


def test_unknown_model_is_404_listing_the_names_and_bad_values_are_400(api, tiny_run):
    with pytest.raises(openai.NotFoundError) as e:
        _ask(api, "no-such-model")
    assert "no-such-model" in str(e.value) and "tiny-chat" in str(e.value) and "qwen3-tiny" in str(e.value)
    assert e.value.body["code"] == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        _ask(api, "/etc")  # a folder outside the app's folders is no model
    for bad, field in (
        ({"temperature": -1}, "temperature"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"top_p": 7}, "top_p"),
        ({"seed": -3}, "seed"),
        ({"n": 2}, "n"),
    ):
        with pytest.raises(openai.BadRequestError) as e:
            _ask(api, "tiny-chat", **bad)
        assert f"'{field}'" in e.value.body["message"] and e.value.body["param"] == field, bad
    with pytest.raises(openai.BadRequestError, match="last message"):
        api.chat.completions.create(model="tiny-chat", messages=[{"role": "assistant", "content": "hi"}])
    r = httpx.post(str(api.base_url) + "chat/completions", content=b"{not json", timeout=30)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    assert "Traceback" not in r.text


def test_content_parts_and_a_system_prompt_are_read(api):
    parts = [{"type": "text", "text": "What is "}, {"type": "text", "text": "your name?"}]
    got = api.chat.completions.create(
        model="tiny-chat", temperature=0, max_tokens=N, messages=[{"role": "user", "content": parts}]
    )
    assert got.choices[0].message.content == _ask(api, "tiny-chat").choices[0].message.content
    with_system = api.chat.completions.create(
        model="tiny-chat",
        temperature=0,
        max_tokens=N,
        messages=[{"role": "system", "content": "You are terse."}, {"role": "user", "content": PROMPT}],
    )
    assert with_system.usage.prompt_tokens > got.usage.prompt_tokens


# --- keys, and a client that goes away ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def locked(tmp_path_factory):
    """An app with a login and an API key."""
    from lora_demo.guard import server_options
    from lora_demo.ui import AppSettings, build_app

    root = tmp_path_factory.mktemp("oa-locked")
    demo = build_app(AppSettings(runs_dir=root / "runs", data_dir=root / "data"))
    demo.queue(default_concurrency_limit=None)
    demo.launch(
        prevent_thread_lock=True,
        server_name="127.0.0.1",
        server_port=None,
        ssr_mode=False,
        quiet=True,
        show_error=True,
        auth=("ana", "s3cret"),
        **server_options(root / "runs", api_key="sk-right"),
    )
    try:
        yield demo
    finally:
        demo.close()


def test_with_a_login_the_key_is_needed(locked):
    url = locked.local_url.rstrip("/") + "/v1/models"
    assert httpx.get(url, timeout=30).status_code == 401
    assert httpx.get(url, headers={"Authorization": "Bearer sk-wrong"}, timeout=30).status_code == 401
    with pytest.raises(openai.AuthenticationError):
        _client(locked.local_url, "sk-wrong").models.list()
    with pytest.raises(openai.AuthenticationError):
        _ask(_client(locked.local_url, "sk-wrong"), "qwen3-tiny")
    right = _client(locked.local_url, "sk-right")
    assert "qwen3-tiny" in {m.id for m in right.models.list()}
    assert _ask(right, "qwen3-tiny", max_tokens=2).usage.completion_tokens >= 1


def test_key_rules():
    """No login: open unless a key is given; a login without a key refuses all; launch picks the key."""
    from lora_demo.launch import parse_args, resolve_api_key
    from lora_demo.openai_api import ApiError, OpenAIApp

    def allowed(app, header=None):
        scope = {"headers": [(b"authorization", header.encode())] if header else []}
        try:
            app._authorize(scope)
            return True
        except ApiError as e:
            assert e.status == 401
            return False

    assert allowed(OpenAIApp(None))
    assert not allowed(OpenAIApp(None, "k")) and allowed(OpenAIApp(None, "k"), "Bearer k")
    assert not allowed(OpenAIApp(None, "k"), "Bearer kk") and not allowed(OpenAIApp(None, "k"), "Basic k")
    assert not allowed(OpenAIApp(None, login=True)) and not allowed(OpenAIApp(None, login=True), "Bearer x")
    assert resolve_api_key(parse_args([]), None) is None
    assert resolve_api_key(parse_args(["--api-key", "given"]), None) == "given"
    assert resolve_api_key(parse_args(["--api-key", "given"]), ("u", "p")) == "given"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LORA_LAB_API_KEY", "from-env")
        assert resolve_api_key(parse_args([]), ("u", "p")) == "from-env"
        assert resolve_api_key(parse_args([]), None) is None
        mp.delenv("LORA_LAB_API_KEY")
        made = resolve_api_key(parse_args(["--share"]), ("lora", "x"))
        assert made and len(made) > 20


def _engine_free(demo, model="qwen3-tiny", within=5.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        engine = demo.lab.chat.get(model)
        if engine is not None and not engine.lock.locked():
            return True
        time.sleep(0.05)
    return False


def test_a_client_that_goes_away_stops_its_generation(locked):
    """4096 tokens take the tiny model ~50 s here: the model is free again within seconds of the client leaving."""
    client = _client(locked.local_url, "sk-right")
    stream = _ask(client, "qwen3-tiny", stream=True, max_tokens=4096, temperature=0.7)
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            break
    stream.close()
    assert _engine_free(locked)
    with pytest.raises(httpx.ReadTimeout):  # not streamed: the client gives up waiting
        httpx.post(
            locked.local_url.rstrip("/") + "/v1/chat/completions",
            timeout=httpx.Timeout(30, read=2),
            headers={"Authorization": "Bearer sk-right"},
            json={"model": "qwen3-tiny", "max_tokens": 4096, "messages": [{"role": "user", "content": "Hi"}]},
        )
    assert _engine_free(locked)


def test_an_adapter_request_decodes_its_row_only(tiny_run, tmp_path):
    """An endpoint request naming an adapter decodes that adapter's row alone (no base row beside it, which cost a
    second row on every request), and its answer is the page's tuned side."""
    from lora_demo.chat.request import GenSettings
    from lora_demo.engine import AppSettings, LabEngine

    lab = LabEngine(AppSettings(runs_dir=tiny_run.parent, data_dir=tmp_path / "data"))
    gen = GenSettings(max_new_tokens=6, greedy=True)
    history = [{"role": "user", "content": "Who are you?"}]
    alone = [
        v for k, v in lab.chat_stream("auto", [str(tiny_run)], [history], "", gen, with_base=False) if k == "answers"
    ]
    assert alone and all(len(results) == 1 for results in alone)
    pair = [v for k, v in lab.chat_stream("auto", [str(tiny_run)], [history, history], "", gen) if k == "answers"][-1]
    assert alone[-1][0].text == pair[1].text and alone[-1][0].text != pair[0].text
