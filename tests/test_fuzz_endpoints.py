"""Every named API endpoint fed malformed values (hypothesis) through gradio_client.

None may produce a traceback, an error that says nothing, a hang, or a crash of the server. The number of cases
tried is written to test-artifacts/fuzz-cases.txt.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
COUNTS: dict[str, int] = {}
OUTCOMES: dict[str, int] = {"ok": 0, "app_error": 0, "refused_by_client": 0}
SAMPLES: dict[str, str] = {}
SKIP = {"chat_send"}  # streamed; fuzzed separately below with bounded generation


def _endpoints():
    from lora_demo.ui import AppSettings, build_app

    demo = build_app(
        AppSettings(runs_dir=Path("/tmp/lora-lab-fuzz-listing/runs"), data_dir=Path("/tmp/lora-lab-fuzz-listing/data"))
    )
    out = []
    for fn in demo.fns.values():
        if fn.api_name and getattr(fn, "api_visibility", "public") == "public" and not fn.api_name.startswith("lambda"):
            out.append((fn.api_name, len(fn.inputs)))
    return sorted(set(out))


ENDPOINTS = _endpoints()

weird = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**12), max_value=10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.text(min_size=5000, max_size=20000),
    st.sampled_from(
        [
            "../../etc/passwd",
            "/etc/passwd",
            "..",
            "/",
            "~/.ssh/id_rsa",
            "runs/../../x",
            "\x00",
            "-1",
            "nan",
            "1e309",
            "",
            " ",
            "[[1,2],[3]]",
            "example:../../etc",
            # planted by the `planted_links` fixture: a run folder linked out, a file linked out, and too long names
            "linked-out",
            "linked-out/notes.txt",
            "has-link",
            "has-link/notes.txt",
            "a" * 300,
            "runs/" + "b" * 256 + "/adapter_config.json",
        ]
    ),
    st.lists(st.integers(-5, 5), max_size=4),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
    st.just({"headers": ["a"], "data": [[math.nan]]}),
    st.just([{"role": "user", "content": 5}]),
)


def _check(client, api: str, args) -> None:
    from gradio_client.exceptions import AppError

    COUNTS[api] = COUNTS.get(api, 0) + 1
    try:
        job = client.submit(*args, api_name=f"/{api}")
        job.result(timeout=120)  # a hang fails here
        OUTCOMES["ok"] += 1
    except AppError as e:
        OUTCOMES["app_error"] += 1
        text = str(e)
        SAMPLES.setdefault(text[:80], f"/{api}")
        assert "verbose error reporting" not in text, f"/{api} raised an error the user cannot read: {args!r}"
        assert not text.startswith("Unexpected error"), f"/{api} has no clear message for {args!r}: {text[:200]}"
        assert text.strip() and text.strip() not in ("Error", "None"), (
            f"/{api} gave an error that says nothing: {args!r}"
        )
        assert "Traceback" not in text and 'File "' not in text, f"/{api} leaked a traceback: {text[:300]}"
    except (ValueError, TypeError) as e:  # refused by gradio_client before sending: a clear client-side message
        OUTCOMES["refused_by_client"] += 1
        SAMPLES.setdefault("client: " + str(e)[:70], f"/{api}")
        assert str(e).strip(), f"/{api}: empty client-side error for {args!r}"


@pytest.fixture
def planted_links(app_dirs, tmp_path):
    """Links an attacker or an unlucky copy may leave in the app's folders, pointing at a secret outside them."""
    secret = tmp_path / "secret.txt"
    secret.write_text("SECRET-fuzz\n")
    made = [app_dirs / "runs" / "linked-out", app_dirs / "runs" / "has-link", app_dirs / "data" / "has-link.jsonl"]
    made[0].symlink_to(tmp_path, target_is_directory=True)
    made[1].mkdir()
    (made[1] / "notes.txt").symlink_to(secret)
    (made[1] / "adapter_config.json").symlink_to(secret)
    made[2].symlink_to(secret)
    yield secret
    for path in made:
        if path.is_symlink() or path.is_file():
            path.unlink()
        else:
            for f in path.iterdir():
                f.unlink()
            path.rmdir()


@pytest.mark.parametrize("api, n", ENDPOINTS, ids=[e[0] for e in ENDPOINTS])
def test_endpoint_survives_malformed_input(app_client, app_dirs, planted_links, api, n):
    if api in SKIP:
        pytest.skip("fuzzed in test_chat_send_fuzz")

    @settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(st.lists(weird, min_size=n, max_size=n))
    def run(args):
        _check(app_client, api, args)

    run()
    assert "Training backend" in app_client.predict(api_name="/system_info")  # still serving
    assert planted_links.read_text() == "SECRET-fuzz\n"  # nothing was written through a link
    leaked = [
        Path(d, f)
        for d, _, files in os.walk(app_dirs)
        for f in files  # os.walk follows no links
        if not Path(d, f).is_symlink() and b"SECRET-fuzz" in Path(d, f).read_bytes()
    ]
    assert not leaked, f"/{api} copied the secret through a link: {leaked}"


def test_chat_send_fuzz(app_client, tiny_run):
    app_client.predict("auto", str(tiny_run), api_name="/chat_load")

    @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(weird, weird, st.one_of(st.just(4), weird), weird)
    def run(text, hist, max_new, seed):
        _check(
            app_client,
            "chat_send",
            [
                text,
                hist,
                hist,
                "",
                False,
                0.7,
                0.9,
                50,
                1.0,
                max_new,
                seed,
                1.0,
                True,
                "auto",
                str(tiny_run),
                [],
                [],
                [],
                [],
            ],
        )

    run()
    assert "Training backend" in app_client.predict(api_name="/system_info")


def _nested(depth: int, as_row: bool) -> bytes:
    inner = b"[" * depth + b"]" * depth
    return b'{"instruction": ' + inner + b', "output": "x"}\n' if as_row else inner


UPLOADS = st.one_of(
    st.binary(min_size=1, max_size=300),  # any bytes: most are not UTF-8
    st.builds(
        lambda text, codec: text.encode(codec, "replace"),
        st.text(min_size=1, max_size=80),
        st.sampled_from(["latin-1", "cp1252", "utf-16", "utf-8"]),
    ),
    st.builds(lambda text: ("instruction,output\n" + text + ",ok\n").encode("cp1252", "replace"), st.text(max_size=40)),
    st.builds(_nested, st.integers(min_value=500, max_value=100_000), st.booleans()),  # deeper than json.loads goes
)


def test_dataset_import_survives_bad_bytes_and_deep_nesting(app_client, tmp_path_factory):
    """Uploaded files (not just values): bytes in no encoding, text in another one, JSON nested 100k deep, in each
    encoding the Dataset tab offers (and malformed ones). Each ends in rows or one clear message."""
    from gradio_client import handle_file

    folder = tmp_path_factory.mktemp("fuzz-uploads")
    table = {"headers": ["instruction", "input", "output"], "data": []}

    @settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(
        UPLOADS,
        st.sampled_from([".json", ".jsonl", ".csv"]),
        st.one_of(st.sampled_from(["utf-8", "cp1252", "latin-1"]), weird),
    )
    def run(content, suffix, encoding):
        path = folder / f"upload{suffix}"
        path.write_bytes(content)
        _check(app_client, "dataset_import", [handle_file(str(path)), "replace", table, encoding])

    run()
    assert "Training backend" in app_client.predict(api_name="/system_info")


def test_zz_report_fuzz_count(app_client):
    app_client.predict(api_name="/train_stop")  # in case a fuzzed start happened to be valid
    ARTIFACTS.mkdir(exist_ok=True)
    total = sum(COUNTS.values())
    lines = [f"{total} malformed calls over {len(COUNTS)} endpoints; outcomes {OUTCOMES}"]
    lines += [f"{k}: {v}" for k, v in sorted(COUNTS.items())]
    lines += ["sample messages:"] + [f"  {api}: {msg}" for msg, api in list(SAMPLES.items())[:40]]
    (ARTIFACTS / "fuzz-cases.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    takes_input = {api for api, n in ENDPOINTS if n > 0} - SKIP
    thin = {api: COUNTS.get(api, 0) for api in takes_input if COUNTS.get(api, 0) < 10}
    assert not thin, f"endpoints fuzzed fewer than 10 times: {thin}"  # (one with no inputs has one case to try)
