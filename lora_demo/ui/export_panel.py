"""The Train tab's export panel: zip, merged, GGUF + Modelfile, LoRA GGUF, the parity report, a Hub push.

Every button calls one LabEngine export method for the run the tab shows; ui/views/export.py draws the report."""

from __future__ import annotations

import gradio as gr

from lora_demo.ui.common import dynamic, friendly, say, show_errors
from lora_demo.ui.views.export import parity_html


class ExportActions:
    def __init__(self, lab):
        self.lab = lab

    @friendly
    def zip(self, name):
        out = self.lab.export(name, "zip")
        return str(out), say("Zipped the adapter, its config, model card and rows: `{path}`.", path=str(out))

    @friendly
    def merged(self, name) -> str:
        out = self.lab.export(name, "merged")
        return say(
            "Merged model (16-bit safetensors + model card, prompted as trained) in `{path}`: "
            "`AutoModelForCausalLM.from_pretrained` loads it.",
            path=str(out),
        )

    @friendly
    def gguf(self, name, outtype):
        out = self.lab.export(name, "gguf", outtype or "q8_0")
        return str(out), say(
            "GGUF written: `{path}`, with an Ollama `Modelfile` beside it (`ollama create NAME -f "
            "Modelfile` in that folder).",
            path=str(out),
        )

    @friendly
    def lora_gguf(self, name):
        out = self.lab.export(name, "lora-gguf", "f16")
        return str(out), say(
            "LoRA GGUF written: `{path}`. Use it with llama.cpp: `llama-cli -m BASE.gguf --lora {file}`.",
            path=str(out),
            file=out.name,
        )

    @friendly
    def check(self, name):
        report = self.lab.export_check(name)
        return parity_html(report, self.lab.parity_label), say(
            "Parity report written to `{path}`.", path=f"{name}/exports/parity.json"
        )

    @friendly
    def push(self, name, repo_id, private, include_gguf, token, dry_run: bool):
        res = self.lab.export_push(name, repo_id, private, include_gguf, dry_run, token)
        files = "\n".join(f"- `{n}` ({size / 1e6:.2f} MB)" for n, size in res["files"])
        if dry_run:
            return (
                say("Would upload to `{repo}` ({n} files, nothing sent):", repo=res["repo_id"], n=len(res["files"]))
                + "\n"
                + files
            )
        return say("Uploaded {n} files to {url}", n=len(res["files"]), url=res["url"]) + "\n" + files

    def dry_run(self, name, repo_id, private, include_gguf, token):
        return self.push(name, repo_id, private, include_gguf, token, True)

    def upload(self, name, repo_id, private, include_gguf, token):
        return self.push(name, repo_id, private, include_gguf, token, False)


def export_panel(lab, view) -> dict:
    """Lay out the panel under the run picker `view` and wire it; returns its components (tests, screenshots)."""
    act = ExportActions(lab)
    with gr.Accordion("Export the shown run", open=False):
        with gr.Row():
            zip_btn = gr.Button("Adapter as .zip", elem_id="export-zip")
            merge_btn = gr.Button("Merge into the base (16-bit)")
        with gr.Row(equal_height=True):
            gguf_type = gr.Dropdown(
                list(lab.gguf_types()),
                value="q8_0",
                label="GGUF type",
                scale=1,
                min_width=120,
                elem_id="export-gguf-type",
            )
            gguf_btn = gr.Button("GGUF + Ollama Modelfile", scale=2, elem_id="export-gguf")
            lora_btn = gr.Button("Adapter alone as LoRA GGUF", scale=2)
        check_btn = gr.Button("Check parity: app vs merged vs GGUF", elem_id="export-check")
        file = gr.File(label="download", interactive=False, elem_id="export-file")
        message = dynamic(gr.Markdown(elem_id="export-message"))
        report = dynamic(gr.HTML(elem_id="export-report"))
        with gr.Accordion("Push to the Hugging Face Hub", open=False):
            with gr.Row():
                repo = gr.Textbox(label="repo id", placeholder="your-name/my-lora", elem_id="push-repo")
                token = gr.Textbox(label="token (write access; empty: this machine's saved login)", type="password")
            with gr.Row():
                private = gr.Checkbox(label="private repo", value=True)
                with_gguf = gr.Checkbox(label="include the GGUFs and Modelfile", value=False)
            with gr.Row():
                list_btn = gr.Button("List the files (dry run)", elem_id="push-dry-run")
                push_btn = gr.Button("Push", elem_id="push-go")
    one_at_a_time = dict(concurrency_limit=1, concurrency_id="train_start")  # a merge loads a model: one at a time
    show_errors(zip_btn.click(act.zip, view, [file, message], api_name="export_zip"), message)
    show_errors(merge_btn.click(act.merged, view, message, api_name="export_merged", **one_at_a_time), message)
    show_errors(
        gguf_btn.click(act.gguf, [view, gguf_type], [file, message], api_name="export_gguf", **one_at_a_time), message
    )
    show_errors(
        lora_btn.click(act.lora_gguf, view, [file, message], api_name="export_lora_gguf", **one_at_a_time), message
    )
    show_errors(check_btn.click(act.check, view, [report, message], api_name="export_check", **one_at_a_time), message)
    push_in = [view, repo, private, with_gguf, token]
    show_errors(list_btn.click(act.dry_run, push_in, message, api_name="export_push_dry_run"), message)
    show_errors(push_btn.click(act.upload, push_in, message, api_name="export_push"), message)
    return {
        "zip": zip_btn,
        "merged": merge_btn,
        "gguf": gguf_btn,
        "lora": lora_btn,
        "check": check_btn,
        "file": file,
        "msg": message,
        "report": report,
    }
