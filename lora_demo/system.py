"""The "System" report: device, backend, precision, threads and which models are usable offline."""

from __future__ import annotations

from lora_demo.device import detect
from lora_demo.i18n import msg, render, translator
from lora_demo.models import default_model_id, is_available_offline, list_models

# The registry's kinds of model, as the System table names them.
KINDS = {"embedded": msg("embedded"), "hub": msg("hub"), "local": msg("local")}


def system_info() -> dict:
    """Everything the System panel and `python -m lora_demo info` show, as one JSON-able dict (its reasons and
    descriptions are Msgs: English strings that format_system_info renders in the panel's language)."""
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


def format_system_info(info: dict, lang: str = "en", offline_only: bool = False) -> str:
    """A Markdown rendering of system_info() for the terminal (English) and the UI (in `lang`); offline_only: the
    table lists only the models usable here now (the UI shows the others apart, see hub_models_markdown)."""
    tr = translator(lang)
    device, name = info["device"].upper(), info["device_name"]
    lines = [
        tr("**Device:** {device} — {name}, {memory} GiB", device=device, name=name, memory=info["memory_gb"])
        if info.get("memory_gb")
        else tr("**Device:** {device} — {name}", device=device, name=name),
        tr(
            "**Training backend:** {backend} ({reason})",
            backend=info["backend"],
            reason=render(info["backend_reason"], lang),
        ),
        tr(
            "**Precision:** {precision} ({reason})",
            precision=info["precision"],
            reason=render(info["precision_reason"], lang),
        ),
        tr(
            "**CPU threads:** {threads} of {cores} cores for a 135M model (chosen per job: tiny models run on 1 "
            "thread, which is faster for small matmuls)",
            threads=info["cpu_threads"],
            cores=info["cpu_cores"],
        ),
        tr("**PyTorch:** {version}", version=info["torch_version"]),
        tr("**Default model:** `{model}`", model=info["default_model"]),
    ]
    if info.get("problem"):
        lines.insert(1, tr("**⚠ Problem:** {problem}", problem=render(info["problem"], lang)))
    if offline_only:  # the page: one fact a line, not one dense paragraph
        lines = ["- " + line for line in lines]
    lines += ["", tr("| model | kind | offline | about |"), "|---|---|---|---|"]
    for m in info["models"]:
        if offline_only and not m["available_offline"]:
            continue
        ok = tr("✅ yes") if m["available_offline"] else tr("⬇ needs download")
        kind = render(KINDS.get(m["kind"], m["kind"]), lang)
        lines.append(f"| `{m['id']}` | {kind} | {ok} | {render(m['description'], lang)} |")
    return "\n".join(lines)


def hub_models_markdown(info: dict, lang: str = "en") -> str:
    """The models that need a download once (from the model hub) before they can be used, as a table; empty when
    every model is usable here."""
    tr = translator(lang)
    hub = [m for m in info["models"] if not m["available_offline"]]
    if not hub:
        return tr("Every listed model is usable offline.")
    lines = [
        tr("These need a download once (a network connection the first time); offline, use the models above."),
        "",
        tr("| model | kind | about |"),
        "|---|---|---|",
    ]
    for m in hub:
        kind = render(KINDS.get(m["kind"], m["kind"]), lang)
        lines.append(f"| `{m['id']}` | {kind} | {render(m['description'], lang)} |")
    return "\n".join(lines)
