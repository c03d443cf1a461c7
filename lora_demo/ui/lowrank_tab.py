"""Low-rank lab tab: SVD of a matrix, the LoRA product B·A, and spectra of trained adapters.

Layout only: each section lays out its components and wires them to MatrixActions (sections 1, 2) or
AdapterActions (section 3), which call the LabEngine's low-rank actions (`lab.lowrank`: all the math and the path
checks) and draw what they return with lora_demo.ui.views.lowrank. The panels the handlers fill (reports, plots,
tables) are rendered in the browser session's language and rendered again when it is switched.
"""

from __future__ import annotations

import inspect
import json

import gradio as gr
import numpy as np

from lora_demo.errors import InputError, LoraLabError
from lora_demo.i18n import LANGS, msg, render
from lora_demo.ui.common import adapter_list, dynamic, friendly, lang, on_language, say, show, show_errors
from lora_demo.ui.views.lowrank import (
    MEASURES,
    adapter_heatmap,
    adapter_markdown,
    compare_frame,
    compare_markdown,
    heatmaps_figure,
    modules_frame,
    product_figure,
    product_markdown,
    spectrum_figure,
    svd_markdown,
)

EDITABLE_MAX = 24  # matrices up to 24×24 are shown in the editable grid; larger ones only in the plots

INTRO = (
    "LoRA replaces a full update ΔW (d rows × n columns) of a frozen weight W0 with a product of two thin matrices: "
    "**W = W0 + B·A**, B (d×r), A (r×n), with a small rank r ≪ min(d, n). Why that works: fine-tuning updates have "
    "fast-decaying singular values, so a few directions carry almost all of the change. Play with it below."
)
# The math and the worked example of the notes this lab follows (SEED-NOTES.md), with the true parameter counts. Its
# Chinese is a whole block in lowrank_tab.zh.yaml (the key is this exact text). Notation: a matrix is d×n (rows ×
# columns); k is the rank kept from an SVD, r a LoRA rank.
WORKED_EXAMPLE = """\
**Full fine-tuning** learns W = W0 + ΔW. **LoRA** keeps W0 (d rows × n columns) frozen and learns the update as a \
product of two low-rank matrices: **W = W0 + B·A**, with B (d×r), A (r×n) and the rank r ≪ min(d, n), usually 8–64. \
PEFT scales the update by α/r (α/√r with rsLoRA).

**Why a low rank is enough.** Every matrix has a singular value decomposition M = UΣVᵀ: U and V are orthogonal, Σ \
is diagonal with the singular values σ₁ ≥ σ₂ ≥ … ≥ 0. Keeping the k largest (rank k) gives \
M_k = U[:, :k] Σ[:k, :k] Vᵀ[:k, :], the best rank-k approximation (Eckart–Young). The singular values of \
fine-tuning updates decay fast, as in this example: σ = 5.2, 3.1, 1.8, 0.3, 0.1, where the top 2 hold 91.6% of the \
energy Σσ² and the top 3 99.75%. The *Worked example* preset of section 1 is such a matrix.

**From the SVD to LoRA.** Truncate the SVD of ΔW at rank r and fold the singular values into A: \
B = U[:, :r], A = Σ[:r, :r] Vᵀ[:r, :], so ΔW ≈ B·A.

**Geometry.** The r rows of A are the adjustment directions; row i of B says how strongly neuron i moves along \
each of them. Every row of ΔW is a linear combination of the same few rows of A. With rank 2, A has 2 rows (two \
directions) and B has 2 columns (each neuron's two coefficients).

**The worked example** (section 2 computes it: press *Worked example*):

```
B (4×2)          A (2×4)
[ 0.1   0.2]     [0.5  -0.2   0.8   0.1]
[ 0.3   0.1]     [0.3   0.6  -0.4   0.2]
[-0.2   0.4]
[ 0.4  -0.1]

ΔW = B·A (4×4, 2 decimals)
[0.11   0.10   0.00   0.05]
[0.18   0.00   0.20   0.05]
[0.02   0.28  -0.32   0.06]
[0.17  -0.14   0.36   0.02]
```

Row 1 of ΔW = 0.1·A₁ + 0.2·A₂, row 2 = 0.3·A₁ + 0.1·A₂, row 3 = −0.2·A₁ + 0.4·A₂, row 4 = 0.4·A₁ − 0.1·A₂ \
(A₁, A₂: the rows of A). Each neuron's adjustment is its own mix of the same two directions.

**Parameters.** The full 4×4 update has 16 parameters, and the factors 4×2 + 2×4 = 16 as well: at this size \
LoRA saves nothing. In general the factors cost r(d+n) against d·n, so LoRA saves parameters only while \
r < d·n/(d+n), here r < 2. At Qwen3-1.7B's 2048×2048 projections, r = 16 costs 65,536 parameters against \
4,194,304."""
ADAPTER_NOTE = (
    "Each LoRA module's update ΔW = s·B·A (s = α/r, or α/√r with rsLoRA) is analysed from its factors: "
    "QR of B and of Aᵀ, then the SVD of the small r×r core — never the full d×n product. "
    "**Effective rank** = exp(entropy of σᵢ/Σσ) (Roy & Vetterli); **rank 90/99** = the smallest rank holding "
    "90%/99% of Σσ²; **stable rank** = ‖ΔW‖²_F/σ₁²."
)


def _round(m) -> list[list[float]]:
    return (np.round(np.asarray(m, dtype=float), 4) + 0.0).tolist()


def _grid(m: np.ndarray):
    if max(m.shape) <= EDITABLE_MAX:
        return gr.Dataframe(value=_round(m), interactive=True)
    return gr.Dataframe(
        value=[[say("{d}×{n} matrix: too large to edit here", d=m.shape[0], n=m.shape[1])]], interactive=False
    )


def _quietly(fn, n_outputs: int):
    """fn for a language switch: a panel whose inputs no longer parse keeps what it shows (no error toast)."""

    def refresh(*args):
        try:
            return fn(*args)
        except LoraLabError:
            return tuple(gr.skip() for _ in range(n_outputs)) if n_outputs > 1 else gr.skip()

    return refresh


def _new_matrix(m: np.ndarray, k_now):
    limit = min(m.shape)
    k = int(min(max(1, k_now or 1), limit))
    return (
        json.dumps(_round(m) if m.size <= 10_000 else m.tolist()),
        _grid(m),
        gr.Slider(minimum=1, maximum=limit, value=k, step=1),
    )


class MatrixActions:
    """Sections 1 and 2's handlers: the engine's low-rank actions (`lab.lowrank`) computed, then drawn."""

    def __init__(self, lowrank):
        self.lowrank = lowrank

    def svd_outputs(self, matrix_json: str, k):
        """Everything below the rank slider for one matrix (JSON rows) and rank k, in this session's language."""
        m, res = self.lowrank.svd(matrix_json, k)
        spectrum = spectrum_figure(res["singular_values"], res["rank"], lang=lang())
        heat = heatmaps_figure(m, res["approx"], res["residual"], res["rank"], lang=lang())
        small = max(m.shape) <= EDITABLE_MAX
        b = _round(res["B"]) if small else [[say("(shown for matrices up to 24×24)")]]
        a = _round(res["A"]) if small else [[say("(shown for matrices up to 24×24)")]]
        numbers = {
            k_: res[k_]
            for k_ in (
                "singular_values",
                "energy",
                "error_fro",
                "relative_error",
                "tail_energy",
                "rank_90",
                "rank_99",
                "params_full",
                "params_lowrank",
                "compression",
            )
        }
        return spectrum, heat, svd_markdown(res, lang()), b, a, numbers

    @friendly
    def svd_at_rank(self, matrix_json: str, k):
        return self.svd_outputs(matrix_json, k)

    @friendly
    def load_preset(self, preset: str, d, n, true_rank, noise, seed, model_id: str, weight: str, k_now):
        return _new_matrix(self.lowrank.preset(preset, d, n, true_rank, noise, seed, model_id, weight), k_now)

    @friendly
    def use_grid(self, grid, k_now):
        return _new_matrix(self.lowrank.parse(grid, msg("grid")), k_now)

    @friendly
    def use_pasted(self, text: str, k_now):
        return _new_matrix(self.lowrank.parse(text, msg("pasted matrix")), k_now)

    @friendly
    def list_weights(self, model_id: str):
        names = self.lowrank.weight_names(model_id)
        return gr.Dropdown(choices=names, value=names[0] if names else None)

    def product_outputs(self, b_grid, a_grid, w0_kind: str):
        """ΔW = B·A as a table, its row-by-row reading, the picture W0 + B·A and the numbers."""
        res = self.lowrank.product(b_grid, a_grid, random_w0=w0_kind == "random W0")
        fig = product_figure(res["B"], res["A"], res["delta_w"], res["W0"], lang=lang())
        numbers = {k_: res[k_] for k_ in ("delta_w", "params_full", "params_lowrank", "break_even_rank")}
        table = [[f"{x + 0.0:.2f}" for x in row] for row in np.round(res["delta_w"], 2)]  # "0.10", never "-0.00"
        return table, product_markdown(res, lang()), fig, numbers

    @friendly
    def product(self, b_grid, a_grid, w0_kind: str):
        return self.product_outputs(b_grid, a_grid, w0_kind)


def _still_shown(current, render_in) -> bool:
    """Whether a panel still shows what render_in(lang) gave in some language (not an error or another message
    written there since): only then does a language switch render it again."""
    if not current:
        return False
    shown = inspect.cleandoc(str(current))
    return any(shown == inspect.cleandoc(str(render_in(code))) for code in LANGS)


class AdapterActions:
    """Section 3's handlers: analyse and truncate the adapters in the LabEngine's runs folder (`lab.lowrank`)."""

    def __init__(self, lab):
        self.lab = lab

    @friendly
    def analyze(self, choice, typed, measure):
        res = self.lab.lowrank.analyze(choice, typed)
        names, first = [m["name"] for m in res["modules"]], res["modules"][0]
        return (
            res,
            adapter_markdown(res, lang()),
            adapter_heatmap(res, measure, lang()),
            gr.Dropdown(choices=names, value=names[0]),
            spectrum_figure(first["singular_values"], title=first["name"], lang=lang()),
            modules_frame(res, lang()),
        )

    @staticmethod
    def _module_spectrum(res, name):
        for m in (res or {}).get("modules", []):
            if m["name"] == name:
                return spectrum_figure(m["singular_values"], title=f"{name} (r = {m['r']})", lang=lang())
        raise InputError(msg("Analyze an adapter first, then pick one of its modules."))

    @friendly
    def pick_module(self, res, name):
        return self._module_spectrum(res, name)

    @friendly
    def re_measure(self, res, measure):
        if not res:
            raise InputError(msg("Analyze an adapter first."))
        return adapter_heatmap(res, measure, lang())

    def relabel_analysis(self, res, measure, name, summary):
        """Language switch: the analysis shown (summary, heatmap, module spectrum, table) in the new language."""
        if not res or not res.get("modules") or not _still_shown(summary, lambda code: adapter_markdown(res, code)):
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        try:
            spectrum = self._module_spectrum(res, name)
        except InputError:
            spectrum = gr.skip()
        return (
            adapter_markdown(res, lang()),
            adapter_heatmap(res, measure, lang()),
            spectrum,
            modules_frame(res, lang()),
        )

    @friendly
    def truncate(self, choice, typed, k, name):
        copy = self.lab.lowrank.truncate(choice, typed, k, name)
        return show(copy.message), gr.Dropdown(choices=copy.choices, value=copy.value), copy.message

    @staticmethod
    def relabel_message(message, current):
        """Language switch: a status line that still shows `message` (a Msg kept in a gr.State), in the new language."""
        if not message or not _still_shown(current, lambda code: render(message, code)):
            return gr.skip()
        return show(message)

    @friendly
    def compare_parent(self, choice, typed):
        """The picked adapter against the one it was continued from, module by module."""
        res = self.lab.lowrank.compare_parent(choice, typed)
        return (
            compare_markdown(res, lang()),
            adapter_heatmap(res, "rel_change", lang()),
            compare_frame(res, lang()),
            res,
        )

    @staticmethod
    def relabel_comparison(res, summary):
        """Language switch: the comparison shown, in the new language."""
        if not res or not _still_shown(summary, lambda code: compare_markdown(res, code)):
            return gr.skip(), gr.skip(), gr.skip()
        return compare_markdown(res, lang()), adapter_heatmap(res, "rel_change", lang()), compare_frame(res, lang())

    def refresh(self, current, seen_newest):
        return adapter_list(self.lab.runs_dir, current, seen_newest, custom_ok=False)


def _compare_section(act: AdapterActions, choice, typed) -> None:
    """Parent vs child: what 'Continue training' changed in each module's ΔW."""
    with gr.Row():
        cmp_btn = gr.Button("Compare with its parent (a run continued from another)", elem_id="lowrank-compare")
    cmp_md = gr.Markdown(elem_id="lowrank-compare-summary")
    with gr.Row():
        cmp_heat = gr.Plot(label="relative change per layer and module")
        cmp_table = gr.Dataframe(
            compare_frame({"modules": [], "top_k": "k"}, lang()),
            label="parent vs child, per module",
            interactive=False,
            max_height=360,
        )
    compared = gr.State({})
    show_errors(
        cmp_btn.click(
            act.compare_parent,
            [choice, typed],
            [cmp_md, cmp_heat, cmp_table, compared],
            api_name="lowrank_compare_parent",
        ),
        cmp_md,
    )
    on_language(act.relabel_comparison, [compared, cmp_md], [cmp_md, cmp_heat, cmp_table])


def create_lowrank_tab(lab, tab: gr.Tab | None = None) -> None:
    gr.Markdown(INTRO)
    with gr.Accordion("From the SVD to LoRA: a worked example", open=False):
        gr.Markdown(WORKED_EXAMPLE, elem_id="lowrank-worked-example")
    matrices = MatrixActions(lab.lowrank)
    _svd_section(matrices)
    _product_section(matrices)
    _adapter_section(AdapterActions(lab), tab)


def _matrix_sources(low) -> dict:
    """Where section 1's matrix comes from: a preset, a model's weight, the editable grid or pasted text (`low`:
    the engine's low-rank actions, which offer the presets and models)."""
    with gr.Row():
        c = {"preset": gr.Dropdown(low.PRESETS, value=low.PRESETS[0], label="Preset")}
        c["seed"] = gr.Number(value=0, precision=0, label="random seed")
        c["load_btn"] = gr.Button("Load preset")
    with gr.Row():
        c["d"] = gr.Number(value=12, precision=0, label="d (rows)")
        c["n"] = gr.Number(value=10, precision=0, label="n (columns)")
        c["true_rank"] = gr.Number(value=3, precision=0, label="true rank")
        c["noise"] = gr.Number(value=0.05, label="noise level")
    with gr.Row():
        c["weight_model"] = gr.Dropdown(
            low.WEIGHT_MODELS, value=low.WEIGHT_MODELS[0], label="model (for 'Weight of a model')"
        )
        c["weight"] = gr.Dropdown([], label="weight matrix", allow_custom_value=False)
        c["list_btn"] = gr.Button("List weights", size="sm")
    with gr.Row():
        with gr.Column(scale=3):
            c["grid"] = gr.Dataframe(
                value=_round(low.seed_matrix(0)), type="array", interactive=True, label="M (editable)"
            )
            c["grid_btn"] = gr.Button("Use edited grid", size="sm")
        with gr.Column(scale=2):
            c["pasted"] = gr.Textbox(lines=5, label="…or paste CSV / JSON rows", placeholder="1, 2, 3\n4, 5, 6")
            c["paste_btn"] = gr.Button("Use pasted matrix", size="sm")
    return c


def _svd_section(act: MatrixActions) -> None:
    with gr.Accordion("1 · A matrix and its SVD", open=True):
        matrix_state = gr.Textbox(visible=False, value=json.dumps(_round(act.lowrank.seed_matrix(0))))
        c = _matrix_sources(act.lowrank)
        status = gr.Markdown(elem_id="lowrank-svd-status")
        k = gr.Slider(1, 5, value=2, step=1, label="rank k")
        init = act.svd_at_rank(matrix_state.value, 2)
        with gr.Row():
            spectrum = gr.Plot(init[0], label="spectrum")
            heat = gr.Plot(init[1], label="M, M_k, M − M_k")
        svd_text = dynamic(gr.Markdown(init[2]))
        with gr.Row():
            b_tab = gr.Dataframe(init[3], label="B = U_k", interactive=False)
            a_tab = gr.Dataframe(init[4], label="A = Σ_k V_kᵀ", interactive=False)
        with gr.Accordion("numbers (JSON, as `python -m lora_demo lowrank --json`)", open=False):
            svd_json = gr.JSON(init[5])
    outputs, new_outputs = [spectrum, heat, svd_text, b_tab, a_tab, svd_json], [matrix_state, c["grid"], k]

    def svd_ok(matrix_json, kk):
        return (*act.svd_at_rank(matrix_json, kk), "")  # a good result clears an earlier error

    preset_inputs = [c[x] for x in ("preset", "d", "n", "true_rank", "noise", "seed", "weight_model", "weight")]
    for event in (
        c["load_btn"].click(act.load_preset, [*preset_inputs, k], new_outputs, api_name="lowrank_preset"),
        c["grid_btn"].click(act.use_grid, [c["grid"], k], new_outputs, api_visibility="private"),
        c["paste_btn"].click(act.use_pasted, [c["pasted"], k], new_outputs, api_name="lowrank_parse"),
    ):
        show_errors(event, status)
        event.success(svd_ok, [matrix_state, k], [*outputs, status], api_visibility="private")
    weights = c["list_btn"].click(act.list_weights, c["weight_model"], c["weight"], api_name="lowrank_weights")
    show_errors(weights, status)
    show_errors(k.release(act.svd_at_rank, [matrix_state, k], outputs, api_name="lowrank_svd"), status)
    k.change(act.svd_at_rank, [matrix_state, k], outputs, api_visibility="private", show_progress="hidden")
    on_language(_quietly(act.svd_outputs, len(outputs)), [matrix_state, k], outputs)


def _product_section(act: MatrixActions) -> None:
    seed_b, seed_a = act.lowrank.SEED_B, act.lowrank.SEED_A
    with gr.Accordion("2 · LoRA product explorer: ΔW = B·A", open=True):
        with gr.Row():
            b_in = gr.Dataframe(value=seed_b, type="array", interactive=True, label="B (d×r)")
            a_in = gr.Dataframe(value=seed_a, type="array", interactive=True, label="A (r×n)")
        with gr.Row():
            w0_kind = gr.Radio(["W0 = 0", "random W0"], value="random W0", label="W0 in the picture")
            seed_btn = gr.Button("Worked example", size="sm")
            prod_btn = gr.Button("Compute ΔW = B·A")
        init = act.product(seed_b, seed_a, "random W0")
        with gr.Row():
            dw_tab = gr.Dataframe(init[0], label="ΔW = B·A (2 decimals)", interactive=False)
            prod_text = dynamic(gr.Markdown(init[1]))
        status = gr.Markdown(elem_id="lowrank-product-status")
        prod_fig = gr.Plot(init[2], label="W0 + B·A")
        with gr.Accordion("numbers (JSON)", open=False):
            prod_json = gr.JSON(init[3])
    outputs = [dw_tab, prod_text, prod_fig, prod_json]
    event = prod_btn.click(act.product, [b_in, a_in, w0_kind], outputs, api_name="lowrank_product")
    show_errors(event, status)
    event.success(lambda: "", None, status, api_visibility="private", show_progress="hidden")
    seed_btn.click(lambda: (seed_b, seed_a), None, [b_in, a_in], api_visibility="private").then(
        act.product, [b_in, a_in, w0_kind], outputs, api_visibility="private"
    )
    on_language(_quietly(act.product_outputs, len(outputs)), [b_in, a_in, w0_kind], outputs)


def _adapter_section(act: AdapterActions, tab: gr.Tab | None) -> None:
    with gr.Accordion("3 · The adapters you trained", open=True):
        gr.Markdown(ADAPTER_NOTE)
        with gr.Row():
            choice = gr.Dropdown(
                label="adapter (from the runs folder, newest first)", elem_id="lowrank-adapter", allow_custom_value=True
            )  # filled when asked; any session may name a newer run
            newest = gr.State(None)
            refresh = gr.Button("↻", size="sm", scale=0, elem_id="lowrank-refresh")
            typed = gr.Textbox(label="…or a PEFT adapter folder", placeholder="/path/to/adapter")
            go_btn = gr.Button("Analyze", variant="primary")
        summary = gr.Markdown(elem_id="lowrank-summary")
        with gr.Row():
            measure = gr.Dropdown(
                [(label, key) for key, label in MEASURES.items()], value="effective_rank", label="heatmap measure"
            )
            module = gr.Dropdown([], label="module (spectrum below)")
        with gr.Row():
            heat = gr.Plot(label="layer × module")
            mod_spec = gr.Plot(label="module spectrum")
        table = gr.Dataframe(
            modules_frame({"modules": []}, lang()), label="all modules", interactive=False, max_height=360
        )
        with gr.Row():
            trunc_k = gr.Number(value=4, precision=0, label="truncate to rank k")
            trunc_name = gr.Textbox(label="new adapter name (in the runs folder)", placeholder="my-run-rank4")
            trunc_btn = gr.Button("Write rank-k copy")
        trunc_out = gr.Markdown(elem_id="lowrank-truncate-status")
        truncated = gr.State(None)
        _compare_section(act, choice, typed)
        analysis = gr.State({})
    show_errors(
        go_btn.click(
            act.analyze,
            [choice, typed, measure],
            [analysis, summary, heat, module, mod_spec, table],
            api_name="lowrank_analyze",
        ),
        summary,
    )
    module.change(act.pick_module, [analysis, module], mod_spec, api_visibility="private")
    measure.change(act.re_measure, [analysis, measure], heat, api_visibility="private")
    refresh_args = dict(
        fn=act.refresh,
        inputs=[choice, newest],
        outputs=[choice, newest],
        api_visibility="private",
        show_progress="hidden",
    )
    for event in (refresh.click, choice.focus, *((tab.select,) if tab is not None else ())):
        event(**refresh_args)
    show_errors(
        trunc_btn.click(
            act.truncate,
            [choice, typed, trunc_k, trunc_name],
            [trunc_out, choice, truncated],
            api_name="lowrank_truncate",
        ),
        trunc_out,
    )
    on_language(act.relabel_analysis, [analysis, measure, module, summary], [summary, heat, mod_spec, table])
    on_language(act.relabel_message, [truncated, trunc_out], trunc_out)
