"""One base model, many adapters (issue 26): every row of a batch names its adapter, every request its own.

- The row masks: a batch with rows [base, adapter 1, adapter 2 (another rank and other target modules), adapter 3 at
  scale 0.5] gives each row exactly the logits PEFT gives that adapter alone.
- Generation: N rows in one batch answer what each adapter answers alone; the budget detaches the least recently
  used adapter and a request naming it attaches it again.
- Two visitors (gradio_client sessions) with different adapters each get their own adapter's answers, and their
  votes land in their own adapter's folder, whatever the other loaded last.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from lora_demo.chat.engine import ChatEngine, GenSettings
from tests.api_helpers import GEN, send_args, sent

PROMPT = "What is your name?"
GREEDY = GenSettings(max_new_tokens=8, greedy=True, repetition_penalty=1.0)


def _random_adapter(folder, targets, r, seed):
    """A qwen3-tiny LoRA with random (non-zero) A and B on `targets`, saved as a PEFT folder with a run config."""
    from peft import LoraConfig, get_peft_model

    from lora_demo.models import load_model

    torch.manual_seed(seed)
    model = load_model("qwen3-tiny").model
    peft = get_peft_model(model, LoraConfig(r=r, lora_alpha=2 * r, target_modules=targets, init_lora_weights=False))
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.mul_(20.0)  # big enough to change greedy answers of the tiny model
    peft.save_pretrained(str(folder))
    (folder / "config.yaml").write_text("model: qwen3-tiny\ntemplate: chat\n")
    return folder


@pytest.fixture(scope="module")
def adapters(tmp_path_factory, tiny_run):
    from lora_demo.lowrank.adapter import truncate_adapter

    root = tmp_path_factory.mktemp("adapters")
    other = _random_adapter(root / "qv-r2", ["q_proj", "v_proj"], 2, seed=1)
    cut = truncate_adapter(str(tiny_run), 4, root / "tiny-rank4")
    return [str(tiny_run), str(other), str(cut)]


@pytest.fixture(scope="module")
def engine(tiny_run, adapters):
    e = ChatEngine()
    list(e.load("auto", str(tiny_run)))
    for a in adapters[1:]:
        list(e.attach(a))
    return e


def _alone(engine, adapter, scale, ids):
    """The logits of one adapter alone through PEFT's own forward (set_adapter, rescaled for a scale != 1)."""
    from peft.helpers import rescale_adapter_scale

    engine.model.set_adapter(engine.adapter_name(adapter))
    with rescale_adapter_scale(engine.model, scale):
        return engine.model(input_ids=ids).logits


def test_rows_of_different_adapters_equal_each_adapter_alone(engine, adapters):
    ids = torch.tensor([engine.prompt_ids([{"role": "user", "content": PROMPT}])])
    x = ids.repeat(4, 1)
    names = [engine.adapter_name(a) for a in adapters]
    with torch.inference_mode():
        with engine.row_scale.on([(None, 0.0), (names[0], 1.0), (names[1], 1.0), (names[2], 0.5)]):
            rows = engine.model(input_ids=x).logits
        with engine.model.disable_adapter():
            base = engine.model(input_ids=ids).logits
        alone = [_alone(engine, a, s, ids) for a, s in ((adapters[0], 1.0), (adapters[1], 1.0), (adapters[2], 0.5))]
    assert torch.equal(rows[0], base[0])  # the base row is the base model bit for bit
    for k, want in enumerate(alone, start=1):
        assert torch.allclose(rows[k], want[0], atol=1e-4), k
    assert (alone[0] - alone[1]).abs().max() > 1e-2 and (alone[0] - base).abs().max() > 1e-2  # they really differ
    assert len({r for st in engine.row_scale.stacks for _, _, r, _ in st.layout}) >= 2  # ranks 16/4 and 2 mixed
    # CPU: q/k/v and gate/up took their base outputs from one shared matmul (the path bench_chat.py measures), each
    # layer's weight a view of the shared tensor (no copy kept), so the rows above were computed that way.
    shared = [st for st in engine.row_scale.stacks if st.W is not None]
    assert {len(st.layers) for st in shared} == {2, 3}
    for st in shared:
        assert all(
            m.base_layer.weight.untyped_storage().data_ptr() == st.W.untyped_storage().data_ptr() for m in st.layers
        )


def test_shared_base_weights_are_taken_over_by_a_rebuild_and_dropped_when_a_weight_is_replaced(tiny_run):
    """CPU: a RowScale rebuilt (as after an attach that needs more rank columns) takes over the siblings' shared base
    tensor instead of copying it again; a member whose weight was replaced since (a safe merge, a .to()) makes its
    group fall back to the layers' own matmuls, and every row still equals PEFT's answer."""
    from peft import PeftModel

    from lora_demo.chat.rowscale import RowScale
    from lora_demo.models import load_model

    model = PeftModel.from_pretrained(load_model("qwen3-tiny").model, str(tiny_run)).eval()
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    with torch.inference_mode():
        with model.disable_adapter():
            base = model(input_ids=ids).logits
        tuned = model(input_ids=ids).logits
    rs = RowScale(model)
    first = [st.W.data_ptr() for st in rs.stacks if st.W is not None]
    assert first
    rs.remove()
    rs = RowScale(model)
    shared = [st for st in rs.stacks if st.W is not None]
    assert [st.W.data_ptr() for st in shared] == first  # taken over, not copied
    q = shared[0].layers[0].base_layer
    with torch.no_grad():
        q.weight.data = q.weight.data.clone()
    with torch.inference_mode(), rs.on([0.0, 1.0]):
        rows = model(input_ids=ids.repeat(2, 1)).logits
    assert sum(st.W is not None for st in rs.stacks) == len(first) - 1
    assert "_lora_lab_shared" not in q.__dict__  # the dropped group's tensor is let go
    assert torch.allclose(rows[0], base[0], atol=1e-5) and torch.allclose(rows[1], tuned[0], atol=1e-4)


def test_one_batch_of_four_rows_answers_what_each_adapter_answers_alone(engine, adapters):
    source = [{"role": "user", "content": PROMPT}]
    last = None
    for last in engine.generate([source] * 4, [None, *adapters], settings=GREEDY):  # noqa: B007
        pass
    got = [r.text for r in last]
    for k, adapter in enumerate(adapters, start=1):
        pair = engine.answer_pair(PROMPT, GREEDY, adapter_dir=adapter, mode="sequential")  # plain PEFT, one by one
        assert got[k] == pair["tuned"], (k, got[k], pair["tuned"])
        assert got[0] == pair["base"]
    assert len(set(got)) >= 3, got  # the adapters answer differently


def test_the_budget_detaches_the_least_recently_used_and_a_request_reattaches_it(tiny_run, adapters):
    e = ChatEngine()
    e.adapters.max_adapters = 2
    list(e.load("auto", adapters[0]))
    first = e.answer_pair(PROMPT, GREEDY)["tuned"]
    for a in adapters[1:]:
        lines = [str(x) for x in e.attach(a)]
        assert lines and lines[0].startswith("Attaching adapter"), lines
    assert adapters[0] not in e.adapters and len(e.adapters) == 2  # the least recently used went
    assert e.answer_pair(PROMPT, GREEDY, adapter_dir=adapters[0])["tuned"] == first  # attached again, same answer
    assert adapters[0] in e.adapters and adapters[1] not in e.adapters


# --- two visitors ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def other_run(app_dirs, adapters):
    """A second adapter in the app's runs folder (another visitor's pick)."""
    dest = app_dirs / "runs" / "qv-other"
    if not dest.exists():
        shutil.copytree(adapters[1], dest)
    yield dest
    shutil.rmtree(dest, ignore_errors=True)


def _answer(client, adapter) -> str:
    out = sent(
        client.submit(
            *send_args(PROMPT, adapter, gen=[0.7, 0.9, 50, 1.0, 8, 0, 1.0, True]), api_name="/chat_send"
        ).result()
    )
    content = out["tuned"][-1]["content"]
    return content if isinstance(content, str) else "".join(b.get("text", "") for b in content)


def test_two_visitors_each_get_their_own_adapter_and_their_votes_land_in_their_run(app_client, tiny_run, other_run):
    from gradio_client import Client

    a, b = Client(app_client.src, verbose=False), Client(app_client.src, verbose=False)
    a.predict("auto", str(tiny_run), api_name="/chat_load")
    b.predict("qwen3-tiny", str(other_run), api_name="/chat_load")  # loaded after A's: the old app answered A with it
    own_a, own_b = _answer(a, tiny_run), _answer(b, other_run)
    assert own_a != own_b
    fresh = Client(app_client.src, verbose=False)  # a new page that never pressed Load, its list showing tiny-chat
    assert _answer(fresh, tiny_run) == own_a
    votes_a, votes_b = tiny_run / "votes.jsonl", other_run / "votes.jsonl"
    before_a = len(votes_a.read_text().splitlines()) if votes_a.exists() else 0
    _, _, ballot, *_ = a.predict(PROMPT, "", *GEN, "auto", str(tiny_run), api_name="/chat_blind")
    b.predict("qwen3-tiny", str(other_run), api_name="/chat_load")  # B acts in between
    a.predict(ballot, "A", api_name="/chat_vote")
    assert len(votes_a.read_text().splitlines()) == before_a + 1
    assert not votes_b.exists()
    assert json.loads(votes_a.read_text().splitlines()[-1])["adapter"].endswith("tiny-chat")
    status = b.predict("qwen3-tiny", str(other_run), api_name="/chat_load")
    assert "qv-other" in status and "2 adapters attached" in status, status


def test_the_cli_answers_with_every_adapter_given(adapters, engine):
    """`chat --adapter A --adapter B --json`: base and each adapter by its folder name, from one batch; the answers
    are those of the engine (greedy)."""
    import subprocess
    import sys

    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "lora_demo",
            "chat",
            "--adapter",
            adapters[0],
            "--adapter",
            adapters[2],
            "--prompt",
            PROMPT,
            "--greedy",
            "--max-new-tokens",
            "8",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(got) == {"base", "tiny-chat", "tiny-rank4"}, got
    gen = GenSettings(max_new_tokens=8, greedy=True)  # the CLI's --greedy (GenSettings' own defaults otherwise)
    for key, adapter in (("tiny-chat", adapters[0]), ("tiny-rank4", adapters[2])):
        assert got[key] == engine.answer_pair(PROMPT, gen, adapter_dir=adapter)["tuned"], key


def test_with_rank_buckets_an_attach_refills_the_same_tensors(tiny_run, adapters, monkeypatch):
    """CUDA's layout (rank columns in buckets of 64): attaching an adapter that fits rewrites the same stacks in
    place (a recorded CUDA graph or compiled step stays valid: no decoder forgets its step), and the rows are still
    each adapter alone; one that does not fit builds new stacks."""
    monkeypatch.setenv("LORA_LAB_CHAT_RANK_BUCKET", "64")
    e = ChatEngine()
    list(e.load("auto", adapters[0]))
    rs, ptrs = e.row_scale, [st.A.data_ptr() for st in e.row_scale.stacks]
    forgot = []
    monkeypatch.setattr(type(e.decoder), "forget_step", lambda self: forgot.append(self))
    list(e.attach(adapters[1]))  # r=2 on q/v: fits beside r=16 in 64 columns
    assert e.row_scale is rs and [st.A.data_ptr() for st in rs.stacks] == ptrs and not forgot
    ids = torch.tensor([e.prompt_ids([{"role": "user", "content": PROMPT}])])
    with torch.inference_mode():
        with rs.on([(None, 0.0), (e.adapter_name(adapters[0]), 1.0), (e.adapter_name(adapters[1]), 1.0)]):
            rows = e.model(input_ids=ids.repeat(3, 1)).logits
        alone = [_alone(e, a, 1.0, ids) for a in adapters[:2]]
    assert torch.allclose(rows[1], alone[0][0], atol=1e-4) and torch.allclose(rows[2], alone[1][0], atol=1e-4)
    e.adapters.max_adapters = 8
    for k in range(4):  # 16 + 2 + 4 x 16 > 64 columns on the all-linear layers: new stacks, steps forgotten
        extra = _random_adapter(
            Path(adapters[0]).parent.parent / f"extra-{k}",
            ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
            16,
            seed=10 + k,
        )
        list(e.attach(str(extra)))
    assert e.row_scale is not rs and forgot


def test_requests_that_wait_together_share_one_batch_and_answer_as_alone(engine, adapters):
    """Several visitors (threads) press Send while a batch decodes: the waiting requests, with different adapters,
    share the next batch (one batch for two requests) and each answers exactly what it answers alone."""
    import threading

    source = [{"role": "user", "content": PROMPT}]
    alone = {a: engine.answer_pair(PROMPT, GREEDY, adapter_dir=a)["tuned"] for a in adapters[:2]}
    long = GenSettings(max_new_tokens=48, min_new_tokens=48, greedy=True, repetition_penalty=1.0)
    got, started = {}, threading.Event()

    def ask(key, adapter, gen):
        last = None
        for last in engine.generate([source, source], [None, adapter], settings=gen):  # noqa: B007
            started.set()
        got[key] = last[1].text

    first = threading.Thread(target=ask, args=("busy", adapters[2], long))
    first.start()
    started.wait(60)
    batches, served = engine.batcher.batches, engine.batcher.served
    others = [threading.Thread(target=ask, args=(a, a, GREEDY)) for a in adapters[:2]]
    for t in others:
        t.start()
    for t in [first, *others]:
        t.join(120)
    assert engine.batcher.served - served == 3 and engine.batcher.batches - batches == 2  # the two waited together
    assert got[adapters[0]] == alone[adapters[0]] and got[adapters[1]] == alone[adapters[1]]


def test_the_status_line_says_what_send_will_do(app_dirs, tiny_run):
    """Before anything is loaded the status tells the truth about Send: with nothing picked Send refuses (so the
    line asks to pick), with an adapter picked Send loads its base and attaches it."""
    from lora_demo.engine import AppSettings, LabEngine

    lab = LabEngine(AppSettings(runs_dir=app_dirs / "runs", data_dir=app_dirs / "data"))
    assert str(lab.chat_status("auto", None)).startswith("Nothing picked yet")
    with pytest.raises(Exception, match="Load a model first"):
        next(lab.chat_stream("auto", [], [[{"role": "user", "content": "hi"}]], "", GREEDY))
    line = str(lab.chat_status("auto", str(tiny_run)))
    assert line.startswith("Not loaded yet: Load (or Send) loads `qwen3-tiny`") and "tiny-chat" in line
