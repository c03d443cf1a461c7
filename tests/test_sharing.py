"""A public link is a small public service (issue 27): tried the way an attacker or an unlucky user would, through
the doors they use (HTTP, gradio_client, files planted in the app's folders).

- Symlinks planted in a run or data folder are never followed: not read, copied, zipped, served or written through.
- Before login, nothing of the app or the user's work is visible (not `/`, not `/config`, not files, not the API).
- Runs and datasets made after the app started can be named by any fresh session.
"""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.request
from http.cookiejar import CookieJar
from pathlib import Path

import pytest

SECRET = "SECRET-outside-the-app-4711"


def _launch(root: Path, auth=None):
    from lora_demo.guard import server_options
    from lora_demo.ui import AppSettings, build_app

    demo = build_app(AppSettings(runs_dir=root / "runs", data_dir=root / "data"))
    demo.queue(default_concurrency_limit=None)
    demo.launch(
        prevent_thread_lock=True,
        server_name="127.0.0.1",
        server_port=None,
        ssr_mode=False,
        quiet=True,
        show_error=True,
        auth=auth,
        **server_options(root / "runs"),
    )
    return demo


def _copy_run(src: Path, dest: Path) -> Path:
    """A finished run as a user would have it (the adapter and its files; no checkpoints)."""
    dest.mkdir(parents=True)
    for f in src.iterdir():
        if f.is_file():
            shutil.copy2(f, dest / f.name)
    return dest


def _get(url: str, opener=None) -> tuple[int, str]:
    try:
        with (opener or urllib.request.build_opener()).open(url, timeout=30) as r:
            return r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")


def _files_holding(root: Path, text: str) -> list[Path]:
    """Regular files under root (links not followed) whose bytes contain text, zips included (they are stored
    deflated, so each member is read)."""
    import zipfile

    hits = []
    for p in root.rglob("*"):
        if p.is_symlink() or not p.is_file():
            continue
        data = p.read_bytes()
        if text.encode() in data:
            hits.append(p)
        elif p.suffix == ".zip":
            with zipfile.ZipFile(p) as z:
                if any(text.encode() in z.read(n) for n in z.namelist()):
                    hits.append(p)
    return hits


@pytest.fixture(scope="module")
def planted(tmp_path_factory, tiny_run):
    """A private app whose folders hold planted links to a secret file and folder outside them."""
    from gradio_client import Client

    root = tmp_path_factory.mktemp("planted")
    outside = tmp_path_factory.mktemp("outside")
    secret = outside / "secret.txt"
    secret.write_text(SECRET + "\n")
    (outside / "rows.jsonl").write_text(json.dumps({"instruction": SECRET, "input": "", "output": "x"}) + "\n")
    (outside / "history").mkdir()
    run = _copy_run(tiny_run, root / "runs" / "linked")
    (run / "notes.txt").symlink_to(secret)
    (run / "README.md").unlink()
    (run / "README.md").symlink_to(secret)  # the model card, which zips and copies carry
    (run / "votes.jsonl").unlink(missing_ok=True)  # (votes other tests cast on the run it copies)
    (run / "votes.jsonl").symlink_to(secret)
    (root / "data").mkdir()
    (root / "data" / ".history").symlink_to(outside / "history")
    (root / "data" / ".autosave.jsonl").symlink_to(outside / "rows.jsonl")
    (root / "data" / "leak.jsonl").symlink_to(outside / "rows.jsonl")
    demo = _launch(root)
    try:
        yield {
            "root": root,
            "run": run,
            "outside": outside,
            "url": demo.local_url,
            "client": Client(demo.local_url, verbose=False),
        }
    finally:
        demo.close()


def _app_error(client, *args, api_name: str) -> str:
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError) as e:
        client.predict(*args, api_name=api_name)
    return str(e.value)


def test_truncate_and_zip_refuse_a_file_linked_out_of_the_run(planted):
    client, run, root = planted["client"], planted["run"], planted["root"]
    message = _app_error(client, str(run), "", 2, "linked-rank2", api_name="/lowrank_truncate")
    assert "README.md" in message and "symbolic link" in message, message
    message = _app_error(client, "linked", api_name="/export_zip")
    assert "README.md" in message and "symbolic link" in message, message
    assert _files_holding(root, SECRET) == []  # no copy, no zip of the outside file anywhere in the app's folders
    assert not (root / "runs" / "linked-rank2" / "adapter_model.safetensors").exists()


def test_the_file_route_serves_no_link(planted):
    run = planted["run"]
    status, body = _get(f"{planted['url']}gradio_api/file={run / 'notes.txt'}")
    assert status == 403 and SECRET not in body
    status, body = _get(f"{planted['url']}gradio_api/file={run / 'config.yaml'}")
    assert status == 200 and "model" in body  # a regular file in the runs folder is still served


def test_votes_are_never_appended_through_a_link(planted):
    client, secret = planted["client"], planted["outside"] / "secret.txt"
    client.predict("auto", str(planted["run"]), api_name="/chat_load")
    _, _, ballot, *_ = client.predict(
        "Hi", "", 0.7, 0.9, 0, 1.0, 4, 0, 1.0, True, "auto", str(planted["run"]), api_name="/chat_blind"
    )
    message = _app_error(client, ballot, "A", api_name="/chat_vote")
    assert message and "votes.jsonl" in message and "symbolic link" in message, message
    assert secret.read_text() == SECRET + "\n"  # the link's target was not appended to


def test_dataset_history_and_autosave_links_are_not_followed(planted):
    client, root, outside = planted["client"], planted["root"], planted["outside"]
    rows = {"headers": ["instruction", "input", "output"], "data": [["q", "", "a"]]}
    client.predict(rows, "kept", 0.0, api_name="/dataset_save")
    message = _app_error(client, rows, "kept", 0.0, api_name="/dataset_save")  # the 2nd save moves the 1st away
    assert ".history" in message and "symbolic link" in message, message
    assert list((outside / "history").iterdir()) == []  # nothing moved outside through the link
    assert (root / "data" / "kept.jsonl").is_file()  # the saved version is kept
    status, config = _get(f"{planted['url']}config")
    assert status == 200 and SECRET not in config  # the linked autosave is not the editor's table
    assert "leak" not in client.predict(api_name="/system_info")  # sanity: the app is still serving
    message = _app_error(client, "leak", api_name="/dataset_load")
    assert SECRET not in message


# --- before login -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def locked(tmp_path_factory, tiny_run):
    """A private app with a login, whose folders hold a run and a dataset with telling names."""
    root = tmp_path_factory.mktemp("locked")
    _copy_run(tiny_run, root / "runs" / "secret-project-run")
    (root / "data").mkdir()
    (root / "data" / "secret-customer-rows.jsonl").write_text(
        json.dumps({"instruction": "q", "input": "", "output": "a"}) + "\n"
    )
    demo = _launch(root, auth=("ana", "s3cret"))
    try:
        yield {"root": root, "url": demo.local_url}
    finally:
        demo.close()


def test_nothing_is_visible_before_login(locked):
    url, run = locked["url"], locked["root"] / "runs" / "secret-project-run"
    status, page = _get(url)
    assert status == 200 and "auth_required" in page  # Gradio's login form
    for leak in ("secret-project-run", "secret-customer-rows", "/train_start", "chat_send", 'named_endpoints":{"'):
        assert leak not in page, leak
    for route in ("config", "gradio_api/info", f"gradio_api/file={run / 'config.yaml'}", "gradio_api/runs"):
        status, body = _get(url + route)
        assert "secret-project-run" not in body and "secret-customer-rows" not in body, route
        assert status in (401, 404) or "auth_required" in body, (route, status)


def test_after_login_the_built_page_still_names_no_run_or_dataset(locked):
    url = locked["url"]
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
    opener.open(urllib.request.Request(url + "login", data=b"username=ana&password=s3cret"), timeout=30)
    status, page = _get(url, opener)
    assert status == 200 and "/train_start" in page  # logged in: the API description is there
    status, config = _get(url + "config", opener)
    assert status == 200
    # The lists are filled per session when the page loads, so the built page holds no names of the user's work.
    for text in (page, config):
        assert "secret-project-run" not in text and "secret-customer-rows" not in text


# --- lists computed when asked ------------------------------------------------------------------------------------


def test_runs_and_datasets_made_after_start_are_reachable_from_a_fresh_session(app_client, app_dirs, tiny_run):
    from gradio_client import Client

    late = _copy_run(tiny_run, app_dirs / "runs" / "late-run")
    (app_dirs / "data" / "late-rows.jsonl").write_text(
        json.dumps({"instruction": "late q", "input": "", "output": "late a"}) + "\n"
    )
    try:
        fresh = Client(app_client.src, verbose=False)
        zipped, message = fresh.predict("late-run", api_name="/export_zip")
        assert Path(zipped).suffix == ".zip" and "late-run" in str(message)
        table, *_ = fresh.predict("late-rows", api_name="/dataset_load")
        assert table["data"][0][0] == "late q"
        form = fresh.predict("late-run", api_name="/train_continue")
        assert str(late) in json.dumps(form)  # the form continues from that run's adapter
    finally:
        shutil.rmtree(late, ignore_errors=True)
        (app_dirs / "data" / "late-rows.jsonl").unlink(missing_ok=True)
