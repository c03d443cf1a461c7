"""The adapter as a zip: PEFT files, tokenizer, config.yaml, model card and the rows, which PeftModel.from_pretrained
reads."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

from lora_demo.adapters import check_adapter_base
from lora_demo.errors import InputError
from lora_demo.i18n import msg
from lora_demo.io import read_bytes, regular_files, write_atomic
from lora_demo.rundir import ADAPTER_CONFIG, ADAPTER_WEIGHTS, CONFIG, MODEL_CARD, STATUS, TRAIN_ROWS, VAL_ROWS, RunDir

ZIP_FILES = (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    MODEL_CARD,
    CONFIG,
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    STATUS,
)
DATA_FILES = (TRAIN_ROWS, VAL_ROWS)


def export_zip(run_dir: str | Path, out_file: str | Path) -> Path:
    """A zip of the adapter (PEFT files, tokenizer, config.yaml, model card) that PeftModel.from_pretrained reads.

    Written atomically: out_file is the complete zip or not there (or the old one), even after a crash."""
    run_dir = Path(run_dir)
    check_adapter_base(run_dir)  # a zip only of an adapter that loads (whole files, the base's modules)
    out = Path(out_file)
    if out.suffix != ".zip":
        raise InputError(msg("The zip file name must end in .zip; got {name}.", name=out.name))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path in regular_files(run_dir, ZIP_FILES):  # a symlinked file is refused, never zipped
            zf.writestr(f"{run_dir.name}/{path.name}", read_bytes(path))
        if RunDir(run_dir).data_dir.is_dir():  # the exact rows, which the model card points to
            for path in regular_files(RunDir(run_dir).data_dir, DATA_FILES):
                zf.writestr(f"{run_dir.name}/data/{path.name}", read_bytes(path))
    return write_atomic(out, buf.getvalue())
