"""A run's exports, as the Train tab and `python -m lora_demo export` make them (file names: layout.py)."""

from __future__ import annotations

from pathlib import Path

from lora_demo.adapters import check_adapter
from lora_demo.errors import InputError
from lora_demo.export import layout
from lora_demo.export.archive import export_zip
from lora_demo.export.gguf import export_gguf, export_lora_gguf
from lora_demo.export.llamacpp import runtime_available
from lora_demo.export.merged import export_merged
from lora_demo.export.modelfile import write_modelfile
from lora_demo.export.parity import check_parity, write_report
from lora_demo.export.prompt_format import run_format
from lora_demo.i18n import msg
from lora_demo.models import model_path
from lora_demo.rundir import RunDir

KINDS = ("zip", "merged", "gguf", "lora-gguf")


def ensure_merged(run_dir: Path) -> Path:
    """The run's merged model, merged now if missing or older than the adapter (a run continued since)."""

    merged = layout.merged_dir(run_dir)
    weights = RunDir(run_dir).weights_path
    if (merged / "config.json").is_file():
        if not weights.is_file() or (merged / "config.json").stat().st_mtime >= weights.stat().st_mtime:
            return merged
        import shutil

        shutil.rmtree(merged)  # stale: the adapter changed after the merge
    return export_merged(run_dir, merged)


def export_gguf_with_modelfile(run_dir: Path, outtype: str = "q8_0") -> tuple[Path, Path]:
    """The merged model as GGUF of outtype, and the Modelfile (Ollama) beside it naming that GGUF."""
    from transformers import AutoTokenizer

    merged = ensure_merged(run_dir)
    out = export_gguf(merged, layout.gguf_file(run_dir, outtype), outtype)
    tok = AutoTokenizer.from_pretrained(str(merged))
    modelfile = write_modelfile(
        layout.exports_dir(run_dir) / layout.MODELFILE, out.name, tok, run_format(run_dir), run_dir.name
    )
    return out, modelfile


def export_lora_gguf_run(run_dir: Path, outtype: str = "f16") -> Path:
    """The run's adapter alone as a LoRA GGUF, against its base's config (a local folder: embedded, local or the
    hub cache)."""

    info = check_adapter(run_dir)
    if not info.base_model:
        raise InputError(
            msg("{run}/adapter_config.json names no base model (base_model_name_or_path).", run=run_dir.name)
        )
    return export_lora_gguf(run_dir, _local_base(info.base_model), layout.lora_gguf_file(run_dir, outtype), outtype)


def _local_base(model_id: str) -> Path:

    path = model_path(model_id)
    if Path(path).is_dir():
        return Path(path)
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(path, allow_patterns=["config.json", "tokenizer*"], local_files_only=True))


def export_run(run_dir: Path, kind: str, outtype: str | None = None) -> Path:
    """One export of the run: zip, merged, gguf (f16/bf16/q8_0, with a Modelfile) or lora-gguf."""

    if kind == "zip":
        return export_zip(run_dir, layout.zip_file(run_dir))
    if kind == "merged":
        return ensure_merged(run_dir)
    if kind == "gguf":
        return export_gguf_with_modelfile(run_dir, outtype or "q8_0")[0]
    if kind == "lora-gguf":
        return export_lora_gguf_run(run_dir, outtype or "f16")
    raise InputError(msg("Unknown export {kind!r}: {kinds}.", kind=kind, kinds=", ".join(KINDS)))


def check_run(run_dir: Path, gguf_types: tuple[str, ...] = ("f16", "q8_0"), max_new_tokens: int = 48) -> dict:
    """The parity report of the run's exports (made now where missing: the merged model, a GGUF of each type, the
    Modelfile), written to exports/parity.json. Without llama.cpp's runtime the GGUF columns are left out and the
    report says so."""

    merged = ensure_merged(run_dir)
    ggufs: dict[str, Path] = {}
    note = None
    if runtime_available():
        for t in gguf_types:
            path = layout.gguf_file(run_dir, t)
            if not path.is_file() or path.stat().st_mtime < (merged / "config.json").stat().st_mtime:
                export_gguf_with_modelfile(run_dir, t)
            ggufs[t] = path
    else:
        note = msg(
            "llama.cpp's runtime (llama-cpp-python) is not installed, so the GGUF was not checked: run `bash "
            "install.sh` again."
        )
    modelfile = layout.exports_dir(run_dir) / layout.MODELFILE
    report = check_parity(run_dir, merged, ggufs, modelfile if modelfile.is_file() else None, max_new_tokens)
    report["note"] = str(note) if note else None
    write_report(report, layout.exports_dir(run_dir) / layout.PARITY)
    return report
