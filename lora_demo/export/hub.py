"""Push a run to the Hugging Face Hub through huggingface_hub (create_repo, upload_folder): the adapter with its
model card and rows, plus the GGUFs and Modelfile when asked. Offline or without a token it fails in seconds with
one line; a dry run lists what would go up."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from lora_demo.errors import InputError
from lora_demo.export import layout
from lora_demo.export.archive import DATA_FILES, ZIP_FILES
from lora_demo.i18n import msg
from lora_demo.io import copy_file, regular_files
from lora_demo.models import registry
from lora_demo.rundir import ADAPTER_WEIGHTS, RunDir


def upload_plan(run_dir: Path, include_gguf: bool = False) -> list[tuple[str, Path]]:
    """(path in the repo, local file) for each file that would be uploaded. Regular files only (never a link)."""
    files = [(p.name, p) for p in regular_files(run_dir, ZIP_FILES)]
    data = RunDir(run_dir).data_dir
    if data.is_dir():
        files += [(f"data/{p.name}", p) for p in regular_files(data, DATA_FILES)]
    if include_gguf:
        exports = layout.exports_dir(run_dir)
        if exports.is_dir():
            files += [(p.name, p) for p in regular_files(exports) if p.suffix == ".gguf" or p.name == layout.MODELFILE]
    if not any(name == ADAPTER_WEIGHTS for name, _ in files):
        raise InputError(
            msg(
                "{run} has no adapter to push (adapter_model.safetensors): train it first, or wait "
                "until it has saved one.",
                run=run_dir.name,
            )
        )
    return files


def check_repo_id(repo_id: str) -> str:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    repo_id = (repo_id or "").strip()
    try:
        if not repo_id or repo_id.count("/") > 1:
            raise HFValidationError(repo_id)
        validate_repo_id(repo_id)
    except HFValidationError:
        raise InputError(
            msg(
                "{repo!r} is not a valid Hub repo id: use NAME or OWNER/NAME with letters, digits, "
                "'-', '_' and '.' (at most 96 characters).",
                repo=repo_id,
            )
        ) from None
    return repo_id


def push(
    run_dir: Path,
    repo_id: str,
    private: bool = False,
    include_gguf: bool = False,
    dry_run: bool = False,
    token: str | None = None,
) -> dict:
    """Upload the run to repo_id (created if missing). Returns {'repo_id', 'files': [(name, bytes)], 'url' (None on
    a dry run)}. The token: the argument, else $HF_TOKEN, else huggingface_hub's saved login."""
    repo_id = check_repo_id(repo_id)
    files = upload_plan(run_dir, include_gguf)
    listing = [(name, path.stat().st_size) for name, path in files]
    if dry_run:
        return {"repo_id": repo_id, "files": listing, "url": None, "private": private}
    from huggingface_hub import HfApi, get_token

    if not registry.hub_reachable():  # fail in seconds: huggingface_hub's own retries take a minute or more offline
        raise InputError(
            msg(
                "The Hugging Face Hub cannot be reached (offline, or HF_HUB_OFFLINE is set): nothing "
                "was uploaded. Connect and try again; --dry-run lists what would go up."
            )
        )
    token = token or os.environ.get("HF_TOKEN") or get_token()
    if not token:
        raise InputError(msg("No Hugging Face token: set HF_TOKEN, or run `hf auth login` once, then push again."))
    api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        with tempfile.TemporaryDirectory() as tmp:  # copies: what goes up is what the plan listed, never a link
            for name, path in files:
                (Path(tmp) / name).parent.mkdir(parents=True, exist_ok=True)
                copy_file(path, Path(tmp) / name)
            api.upload_folder(
                folder_path=tmp,
                repo_id=repo_id,
                repo_type="model",
                commit_message=f"LoRA Lab: upload run {run_dir.name}",
            )
    except InputError:
        raise
    except Exception as e:  # HTTP errors (401, 403, 409...) as one line
        line = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise InputError(msg("The Hub refused the upload: {why}", why=line)) from None
    return {"repo_id": repo_id, "files": listing, "url": str(url), "private": private}
