"""Text the Low-rank lab shows next to its plots: the numbers behind each picture, in Markdown (English or 简体中文)."""

from __future__ import annotations

from lora_demo.i18n import msg, render, translator


def svd_markdown(res: dict, lang: str = "en") -> str:
    """Error, Eckart-Young check, parameter counts and factor check for one rank-k approximation."""
    tr = translator(lang)
    d, n = res["shape"]
    k = res["rank"]
    return "\n".join(
        [
            tr(
                "**M is {d}×{n}; rank-k approximation with k = {k}** keeps {e:.2%} of the energy Σσ².",
                d=d,
                n=n,
                k=k,
                e=res["energy"][k - 1],
            ),
            tr(
                "- Frobenius error ‖M − M_k‖_F = **{err:.4g}**, relative error **{rel:.2%}**",
                err=res["error_fro"],
                rel=res["relative_error"],
            ),
            tr(
                "- Eckart–Young: error² = {sq:.6g} = Σ_(i>k) σᵢ² = {tail:.6g} (difference {diff:.1e}): no rank-{k} "
                "matrix does better.",
                sq=res["error_sq"],
                tail=res["tail_energy"],
                diff=abs(res["error_sq"] - res["tail_energy"]),
                k=k,
            ),
            tr("- 90% of the energy needs k = {r90}, 99% needs k = {r99}.", r90=res["rank_90"], r99=res["rank_99"]),
            tr(
                "- Parameters: full d·n = {d}·{n} = **{full:,}**, factors k(d+n) = {k}·({d}+{n}) = **{low:,}** → "
                "compression **{ratio:.2f}×**. Low rank saves only while k < d·n/(d+n) = {even:.2f}.",
                d=d,
                n=n,
                k=k,
                full=res["params_full"],
                low=res["params_lowrank"],
                ratio=res["compression"],
                even=res["break_even_rank"],
            ),
            tr(
                "- Factors B = U_k ({d}×{k}) and A = Σ_k V_kᵀ ({k}×{n}); max |B·A − M_k| = {check:.1e}.",
                d=d,
                n=n,
                k=k,
                check=res["factor_check"],
            ),
        ]
    )


def product_markdown(res: dict, lang: str = "en") -> str:
    """Row-by-row reading of ΔW = B·A and the parameter counts (with the break-even rank)."""
    tr = translator(lang)
    d, n = res["shape"]  # rows × columns
    r = res["r"]
    full, low = res["params_full"], res["params_lowrank"]
    saving = msg("this saves {n:,} parameters", n=full - low) if low < full else msg("this saves nothing")
    lines = [
        tr(
            "**ΔW = B·A is {d}×{n} with rank ≤ r = {r}.** Each row of ΔW is a weighted sum of A's rows "
            "(the adjustment directions); B's row i gives the weights:",
            d=d,
            n=n,
            r=r,
        ),
        "",
        *[f"- {render(x, lang)}" for x in res["row_expressions"][:16]],
        *(["- …"] if len(res["row_expressions"]) > 16 else []),
        "",
        tr(
            "**Parameters:** full ΔW d·n = {d}·{n} = {full:,}; factors r(d+n) = {r}·({d}+{n}) = {low:,}: {saving}. "
            "LoRA pays off only while r < d·n/(d+n) = {even:.2f}. At Qwen3-1.7B's 2048×2048 q_proj, r = 16 costs "
            "65,536 parameters against 4,194,304.",
            d=d,
            n=n,
            r=r,
            full=full,
            low=low,
            saving=saving,
            even=res["break_even_rank"],
        ),
    ]
    return "\n".join(lines)


def adapter_markdown(analysis: dict, lang: str = "en") -> str:
    """Summary of an adapter analysis: how low-rank the trained updates really are."""
    tr = translator(lang)
    mods = analysis["modules"]
    if not mods:
        return tr("No LoRA modules found.")
    eff = sorted(m["effective_rank"] for m in mods)
    r90 = sorted(m["rank_90"] for m in mods)
    med = len(mods) // 2
    rel = [m["rel_to_base"] for m in mods if m.get("rel_to_base") is not None]
    lines = [
        tr(
            "**{count} LoRA modules**, base `{base}`, r = {r}, α = {alpha}{rs}.",
            count=len(mods),
            base=analysis["base_model"],
            r=analysis["r"],
            alpha=analysis["lora_alpha"],
            rs=" (rsLoRA)" if analysis["use_rslora"] else "",
        ),
        tr(
            "- Effective rank (exp of the entropy of σ/Σσ): median {med:.2f}, range {lo:.2f}–{hi:.2f} of r = {r}.",
            med=eff[med],
            lo=eff[0],
            hi=eff[-1],
            r=analysis["r"],
        ),
        tr(
            "- Rank holding 90% of Σσ²: median {med}, max {top}. Stable rank = ‖ΔW‖²_F / σ₁².",
            med=r90[med],
            top=r90[-1],
        ),
    ]
    if rel:
        lines.append(
            tr("- ‖ΔW‖_F / ‖W0‖_F: median {med:.2e}, max {top:.2e}.", med=sorted(rel)[len(rel) // 2], top=max(rel))
        )
    else:
        lines.append(tr("- ‖ΔW‖/‖W0‖: the base weights are not on this machine (hub model not downloaded)."))
    return "\n".join(lines)
