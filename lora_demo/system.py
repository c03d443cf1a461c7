"""The "System" report: device, backend, precision, threads and which models are usable offline."""

from __future__ import annotations

from lora_demo.device import detect
from lora_demo.models import default_model_id, is_available_offline, list_models


def system_info() -> dict:
    """Everything the System panel and `python -m lora_demo info` show, as one JSON-able dict."""
    plan = detect()
    models = [
        {
            "id": s.id,
            "kind": s.kind,
            "description": s.description,
            "available_offline": is_available_offline(s.id),
        }
        for s in list_models()
    ]
    return {
        **plan.to_dict(),
        "default_model": default_model_id(plan.device == "cuda"),
        "models": models,
    }


def format_system_info(info: dict) -> str:
    """A Markdown rendering of system_info() for the terminal and the UI."""
    mem = f", {info['memory_gb']} GiB" if info.get("memory_gb") else ""
    lines = [
        f"**Device:** {info['device'].upper()} — {info['device_name']}{mem}",
        f"**Training backend:** {info['backend']} ({info['backend_reason']})",
        f"**Precision:** {info['precision']} ({info['precision_reason']})",
        f"**CPU threads:** {info['cpu_threads']} of {info['cpu_cores']} cores for a 135M model "
        "(chosen per job: tiny models run on 1 thread, which is faster for small matmuls)",
        f"**PyTorch:** {info['torch_version']}",
        f"**Default model:** `{info['default_model']}`",
    ]
    if info.get("problem"):
        lines.insert(1, f"**⚠ Problem:** {info['problem']}")
    lines += ["", "| model | kind | offline | about |", "|---|---|---|---|"]
    for m in info["models"]:
        ok = "✅ yes" if m["available_offline"] else "⬇ needs download"
        lines.append(f"| `{m['id']}` | {m['kind']} | {ok} | {m['description']} |")
    return "\n".join(lines)
