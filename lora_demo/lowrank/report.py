"""Text the Low-rank lab shows next to its plots: the numbers behind each picture, in Markdown."""

from __future__ import annotations


def svd_markdown(res: dict) -> str:
    """Error, Eckart-Young check, parameter counts and factor check for one rank-k approximation."""
    d, n = res["shape"]
    k = res["rank"]
    e = res["energy"][k - 1]
    return "\n".join(
        [
            f"**M is {d}×{n}; rank-k approximation with k = {k}** keeps {e:.2%} of the energy Σσ².",
            f"- Frobenius error ‖M − M_k‖_F = **{res['error_fro']:.4g}**, relative error **{res['relative_error']:.2%}**",
            f"- Eckart–Young: error² = {res['error_sq']:.6g} = Σ_(i>k) σᵢ² = {res['tail_energy']:.6g} "
            f"(difference {abs(res['error_sq'] - res['tail_energy']):.1e}): no rank-{k} matrix does better.",
            f"- 90% of the energy needs k = {res['rank_90']}, 99% needs k = {res['rank_99']}.",
            f"- Parameters: full d·k = {d}·{n} = **{res['params_full']:,}**, factors k(d+n) = {k}·({d}+{n}) = "
            f"**{res['params_lowrank']:,}** → compression **{res['compression']:.2f}×**. "
            f"Low rank saves only while k < d·n/(d+n) = {res['break_even_rank']:.2f}.",
            f"- Factors B = U_k ({d}×{k}) and A = Σ_k V_kᵀ ({k}×{n}); max |B·A − M_k| = {res['factor_check']:.1e}.",
        ]
    )


def product_markdown(res: dict) -> str:
    """Row-by-row reading of ΔW = B·A and the parameter counts (with the break-even rank)."""
    d, k = res["shape"]
    r = res["r"]
    saving = (
        f"saves {res['params_full'] - res['params_lowrank']:,} parameters"
        if res["params_lowrank"] < res["params_full"]
        else "saves nothing"
    )
    lines = [
        f"**ΔW = B·A is {d}×{k} with rank ≤ r = {r}.** Each row of ΔW is a weighted sum of A's rows "
        "(the adjustment directions); B's row i gives the weights:",
        "",
        *[f"- {x}" for x in res["row_expressions"][:16]],
        *(["- …"] if len(res["row_expressions"]) > 16 else []),
        "",
        f"**Parameters:** full ΔW d·k = {d}·{k} = {res['params_full']:,}; factors r(d+k) = {r}·({d}+{k}) = "
        f"{res['params_lowrank']:,}: this {saving}. LoRA pays off only while r < d·k/(d+k) = "
        f"{res['break_even_rank']:.2f}. At Qwen3-1.7B's 2048×2048 q_proj, r = 16 costs 65,536 parameters "
        "against 4,194,304.",
    ]
    return "\n".join(lines)


def adapter_markdown(analysis: dict) -> str:
    """Summary of an adapter analysis: how low-rank the trained updates really are."""
    mods = analysis["modules"]
    if not mods:
        return "No LoRA modules found."
    eff = sorted(m["effective_rank"] for m in mods)
    r90 = sorted(m["rank_90"] for m in mods)
    med = len(mods) // 2
    rel = [m["rel_to_base"] for m in mods if m.get("rel_to_base") is not None]
    lines = [
        f"**{len(mods)} LoRA modules**, base `{analysis['base_model']}`, r = {analysis['r']}, "
        f"α = {analysis['lora_alpha']}{' (rsLoRA)' if analysis['use_rslora'] else ''}.",
        f"- Effective rank (exp of the entropy of σ/Σσ): median {eff[med]:.2f}, range {eff[0]:.2f}–{eff[-1]:.2f} "
        f"of r = {analysis['r']}.",
        f"- Rank holding 90% of Σσ²: median {r90[med]}, max {r90[-1]}. Stable rank = ‖ΔW‖²_F / σ₁².",
    ]
    if rel:
        lines.append(f"- ‖ΔW‖_F / ‖W0‖_F: median {sorted(rel)[len(rel) // 2]:.2e}, max {max(rel):.2e}.")
    else:
        lines.append("- ‖ΔW‖/‖W0‖: the base weights are not on this machine (hub model not downloaded).")
    return "\n".join(lines)
