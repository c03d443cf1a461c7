"""Low-rank lab engine: the seed's numbers, Eckart-Young, factor spectra, truncation, bad input."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from lora_demo.errors import InputError
from lora_demo.lowrank import (
    SEED_A,
    SEED_B,
    analyze_adapter,
    factor_svd,
    load_lora_factors,
    lora_product,
    low_rank_approx,
    low_rank_plus_noise,
    parse_matrix,
    seed_matrix,
    truncate_adapter,
)

SEED_DW = [[0.11, 0.10, 0.00, 0.05], [0.18, 0.00, 0.20, 0.05], [0.02, 0.28, -0.32, 0.06], [0.17, -0.14, 0.36, 0.02]]


def test_seed_product_gives_the_seed_table():
    res = lora_product(SEED_B, SEED_A)
    assert res["delta_w_rounded"] == SEED_DW
    assert res["row_expressions"][0] == "row 1 = 0.1·A₁ + 0.2·A₂"
    assert res["row_expressions"][3] == "row 4 = 0.4·A₁ - 0.1·A₂"
    # The write-up's "12" was a slip: 4×2 + 2×4 = 16, and r=2 is exactly the break-even rank 4·4/(4+4).
    assert (res["params_full"], res["params_lowrank"], res["break_even_rank"]) == (16, 16, 2.0)


def test_qwen_shape_param_counts():
    from lora_demo.lowrank import param_counts

    c = param_counts(2048, 2048, 16)
    assert (c["params_full"], c["params_lowrank"]) == (4_194_304, 65_536)


def test_seed_spectrum_and_energy():
    res = low_rank_approx(seed_matrix(3), 2)
    assert np.allclose(res["singular_values"], [5.2, 3.1, 1.8, 0.3, 0.1])
    assert res["energy"][1] == pytest.approx(0.916, abs=5e-4)
    assert res["energy"][2] == pytest.approx(0.9975, abs=5e-4)
    assert (res["rank_90"], res["rank_99"]) == (2, 3)


def _rank_k_rivals(m: np.ndarray, k: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Rank-k matrices that compete with the SVD truncation: random B@A, random A with the least-squares B for m,
    and the top-k SVD factors nudged slightly (rank k, within a hair of the optimum)."""
    d, n = m.shape
    u, s, vt = np.linalg.svd(m, full_matrices=False)
    rivals = []
    for _ in range(4):
        b, a = rng.standard_normal((d, k)), rng.standard_normal((k, n))
        rivals.append(b @ a)
        rivals.append(m @ np.linalg.pinv(a) @ a)  # the best B for this A: m projected onto A's row space
        for eps in (1e-1, 1e-3):
            du, dv = eps * rng.standard_normal((d, k)), eps * rng.standard_normal((k, n))
            rivals.append((u[:, :k] + du) @ (s[:k, None] * (vt[:k] + dv)))
    return rivals


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("shape", [(7, 5), (5, 9), (12, 12)])
def test_eckart_young_on_random_matrices(seed, shape):
    rng = np.random.default_rng(seed)
    m = rng.standard_normal(shape)
    for k in range(1, min(shape) + 1):
        res = low_rank_approx(m, k)
        s = np.array(res["singular_values"])
        assert res["error_fro"] ** 2 == pytest.approx(np.sum(s[k:] ** 2), abs=1e-9)
        assert res["factor_check"] < 1e-10
        approx = np.array(res["approx"])
        assert np.linalg.matrix_rank(approx, tol=1e-8) == k
        # Eckart-Young: no rank-k matrix is closer to m than the returned approximation (measured, not reported).
        ours = np.linalg.norm(m - approx)
        best_rival = min(np.linalg.norm(m - r) for r in _rank_k_rivals(m, k, rng))
        assert ours <= best_rival + 1e-12
        if k < min(shape):
            # The comparison has teeth: a wrong rank-k answer (the k smallest singular directions) loses to a rival.
            u, _, vt = np.linalg.svd(m, full_matrices=False)
            wrong = u[:, -k:] @ (s[-k:, None] * vt[-k:])
            assert best_rival < np.linalg.norm(m - wrong)


def test_low_rank_plus_noise_has_its_rank():
    m = low_rank_plus_noise(20, 15, 3, 0.0, seed=1)
    assert np.linalg.matrix_rank(m) == 3
    assert low_rank_approx(m, 3)["error_fro"] < 1e-9


@pytest.mark.parametrize("d, k, r, scaling", [(64, 48, 8, 2.0), (30, 90, 4, -0.5), (16, 16, 16, 1.0)])
def test_factor_spectrum_equals_svd_of_product(d, k, r, scaling):
    torch.manual_seed(0)
    b, a = torch.randn(d, r), torch.randn(r, k)
    ours = factor_svd(b, a, scaling)
    ref = torch.linalg.svdvals(scaling * b.double() @ a.double())[:r]
    assert torch.allclose(ours, ref, rtol=1e-9, atol=1e-9)
    u, s, vt = factor_svd(b, a, scaling, vectors=True)
    assert torch.allclose((u * s) @ vt, scaling * b.double() @ a.double(), atol=1e-9)


def make_adapter(out):
    """A qwen3-tiny LoRA adapter (r=8, alpha=16) with random (non-zero) B, saved by PEFT into out."""
    from peft import LoraConfig, get_peft_model

    from lora_demo.models import load_model

    lm = load_model("qwen3-tiny")
    cfg = LoraConfig(
        r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    model = get_peft_model(lm.model, cfg)
    torch.manual_seed(1)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.1)
    model.save_pretrained(out)
    cfg_file = out / "adapter_config.json"  # record the registry id, as training runs do
    cfg_file.write_text(json.dumps({**json.loads(cfg_file.read_text()), "base_model_name_or_path": "qwen3-tiny"}))
    return out


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory):
    return make_adapter(tmp_path_factory.mktemp("adapters") / "run-a")


def test_analyze_adapter(adapter_dir):
    res = analyze_adapter(adapter_dir)
    assert len(res["modules"]) == 14  # 2 layers × 7 projections
    _, factors = load_lora_factors(adapter_dir)
    for m in res["modules"]:
        b, a, s = factors[m["name"]]
        assert s == 2.0  # alpha 16 / r 8
        ref = torch.linalg.svdvals(s * b.double() @ a.double())[: m["r"]]
        assert np.allclose(m["singular_values"], ref.numpy(), rtol=1e-8)
        assert m["fro_norm"] == pytest.approx(float(torch.linalg.norm(s * b.double() @ a.double())), rel=1e-9)
        assert 1 <= m["effective_rank"] <= m["r"] and 1 <= m["stable_rank"] <= m["r"]
        assert m["rel_to_base"] is not None and m["rel_to_base"] > 0  # qwen3-tiny's weights are on disk


def test_truncation_keeps_top_k_spectrum_and_loads_in_peft(adapter_dir, tmp_path):
    from peft import PeftModel

    from lora_demo.models import load_model

    out = truncate_adapter(adapter_dir, 3, tmp_path / "rank3")
    full = {m["name"]: m["singular_values"] for m in analyze_adapter(adapter_dir)["modules"]}
    cut = {m["name"]: m["singular_values"] for m in analyze_adapter(out)["modules"]}
    for name, s in full.items():
        assert np.allclose(cut[name], s[:3], rtol=1e-5)
    model = PeftModel.from_pretrained(load_model("qwen3-tiny").model, str(out))
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    dw = layer.get_delta_weight("default").double()
    assert np.allclose(torch.linalg.svdvals(dw)[:3].numpy(), full["model.layers.0.self_attn.q_proj"][:3], rtol=1e-4)
    with pytest.raises(InputError, match="already exists"):
        truncate_adapter(adapter_dir, 3, out)
    with pytest.raises(InputError, match="from 1 to 7"):
        truncate_adapter(adapter_dir, 8, tmp_path / "x")


@pytest.mark.parametrize(
    "text, message",
    [
        ("[[1, 2], [3]]", "ragged rows"),
        ("[[1, 'a'], [3, 4]]", "not valid JSON"),
        ('[[1, "x"], [3, 4]]', "non-number at row 1, column 2"),
        ("1, 2\n3, abc", "non-number at row 2, column 2"),
        ("", "empty"),
        ("[]", "empty"),
        ("[[NaN, 1], [2, 3]]", "only finite"),
        ("1, inf\n2, 3", "only finite"),
        ("[1, 2, 3]", "list of rows"),
        ('{"a": 1}', "not an object"),
        ("[[1, 2", "not valid JSON"),
    ],
)
def test_bad_matrices(text, message):
    with pytest.raises(InputError, match=message):
        parse_matrix(text)


@pytest.mark.parametrize("k", [0, 3, -1, 1.5, "two", float("nan")])
def test_rank_out_of_range(k):
    with pytest.raises(InputError, match="rank must be a whole number from 1 to 2"):
        low_rank_approx(np.eye(2), k)


def test_shapes_that_do_not_chain():
    with pytest.raises(InputError, match="must equal A's rows"):
        lora_product([[1, 2]], [[1, 2]])


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "lora_demo", *args], capture_output=True, text=True, timeout=120)


def test_cli_lowrank_matrix_json():
    out = _cli("lowrank", "--matrix", "[[3, 0], [0, 1]]", "--rank", "1", "--json")
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert res["singular_values"] == [3.0, 1.0] and res["error_fro"] == pytest.approx(1.0)
    assert res["energy"] == [0.9, 1.0] and res["approx"] == [[3.0, 0.0], [0.0, 0.0]]
    assert (res["params_full"], res["params_lowrank"]) == (4, 4)


def test_cli_lowrank_product_json():
    out = _cli("lowrank", "--B", json.dumps(SEED_B), "--A", json.dumps(SEED_A), "--json")
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert np.allclose(res["delta_w"], SEED_DW, atol=0.005) and res["params_lowrank"] == 16


def test_cli_analyze_json(adapter_dir):
    out = _cli("analyze", str(adapter_dir), "--json")
    assert out.returncode == 0, out.stderr
    mods = json.loads(out.stdout)["modules"]
    assert len(mods) == 14 and {"name", "singular_values", "effective_rank", "fro_norm"} <= set(mods[0])


@pytest.mark.parametrize(
    "args, message",
    [
        (["lowrank", "--matrix", "[[1,2],[3]]", "--rank", "1"], "ragged"),
        (["lowrank", "--matrix", "[[1,2],[3,4]]", "--rank", "5"], "from 1 to 2"),
        (["lowrank", "--matrix", "[[nan]]", "--rank", "1"], "finite"),
        (["lowrank", "--B", "[[1,2]]", "--A", "[[1]]"], "must equal"),
        (["lowrank"], "Give --matrix"),
        (["analyze", "/"], "holds no adapter"),
    ],
)
def test_cli_bad_input_exit_2_one_line(args, message):
    out = _cli(*args)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in out.stderr


def test_parent_child_comparison_equals_the_dense_computation():
    """compare_module works on the factors only; the dense ΔW matrices must give the same numbers."""
    from lora_demo.lowrank.compare import compare_module

    g = torch.Generator().manual_seed(0)
    b1, a1 = torch.randn(40, 6, generator=g), torch.randn(6, 30, generator=g)
    b2, a2 = b1 + 0.3 * torch.randn(40, 6, generator=g), a1 + 0.3 * torch.randn(6, 30, generator=g)
    p, c = (b1, a1, 0.5), (b2, a2, 2.0)
    res = compare_module(p, c, k=3)
    dp, dc = 0.5 * b1.double() @ a1.double(), 2.0 * b2.double() @ a2.double()
    assert res["parent_norm"] == pytest.approx(float(dp.norm()), rel=1e-9)
    assert res["rel_change"] == pytest.approx(float((dc - dp).norm() / dp.norm()), rel=1e-9)
    assert res["cosine"] == pytest.approx(float((dp * dc).sum() / dp.norm() / dc.norm()), rel=1e-9)
    up, uc = torch.linalg.svd(dp)[0][:, :3], torch.linalg.svd(dc)[0][:, :3]
    assert res["subspace_overlap"] == pytest.approx(float((up.T @ uc).norm() ** 2 / 3), rel=1e-6)
    same = compare_module(p, p)
    assert same["rel_change"] == pytest.approx(0, abs=1e-6) and same["cosine"] == pytest.approx(1)
    assert same["subspace_overlap"] == pytest.approx(1)
    flipped = compare_module(p, (b1, a1, -0.5))  # the opposite update: cosine -1, same directions
    assert flipped["cosine"] == pytest.approx(-1) and flipped["rel_change"] == pytest.approx(2)


# 简体中文 (issue 14): the engine's reports, plots and errors render in the session's language; the CLI keeps English.


def test_worked_example_is_the_same_in_both_languages():
    """The seed write-up's worked example (the Low-rank lab's explanation) shows the matrices lora_product computes,
    and its Chinese version shows the very same numbers."""
    from lora_demo.i18n import render
    from lora_demo.ui.lowrank_tab import WORKED_EXAMPLE

    zh = render(WORKED_EXAMPLE, "zh")
    assert zh != WORKED_EXAMPLE and "奇异值分解" in zh and "低秩" in zh
    block = re.compile(r"```\n(.*?)```", re.S)
    en_rows = [ln for ln in block.search(WORKED_EXAMPLE).group(1).splitlines() if ln.startswith("[")]
    zh_rows = [ln for ln in block.search(zh).group(1).splitlines() if ln.startswith("[")]
    assert en_rows == zh_rows
    dw = [[float(x) for x in ln.strip("[]").split()] for ln in en_rows if len(ln.split()) == 4]
    assert dw == SEED_DW == lora_product(SEED_B, SEED_A)["delta_w_rounded"]
    numbers = re.compile(r"\d+(?:[.,]\d+)*")
    assert sorted(numbers.findall(WORKED_EXAMPLE)) == sorted(numbers.findall(zh))  # σ, 91.6%, 16, 65,536, ...


@pytest.mark.parametrize("text", ["[[1, 2], [3]]", "", "[[1, 'a']]", "1, x", "[[NaN, 1]]", "[1, 2]", '{"a": 1}'])
@pytest.mark.parametrize("name", [None, "B matrix", "pasted matrix"])
def test_matrix_errors_render_in_chinese(text, name):
    from lora_demo.i18n import msg, render

    with pytest.raises(InputError) as info:
        parse_matrix(text, msg(name) if name else None)
    english, zh = str(info.value), render(info.value.args[0], "zh")
    assert "matrix" in english and zh != english
    assert not re.search(r"\b(matrix|row|column|empty|ragged)\b", zh), zh  # the matrix's name is Chinese too


def test_reports_and_plots_in_chinese(adapter_dir):
    from lora_demo.lowrank.compare import compare_adapters
    from lora_demo.ui.views.lowrank import (
        adapter_heatmap,
        adapter_markdown,
        compare_markdown,
        heatmaps_figure,
        product_figure,
        product_markdown,
        spectrum_figure,
        svd_markdown,
    )

    res = low_rank_approx(seed_matrix(0), 2)
    assert svd_markdown(res) == svd_markdown(res, "en") and "keeps 91.65% of the energy" in svd_markdown(res)
    assert "保留了 91.65% 的能量" in svd_markdown(res, "zh")
    prod = lora_product(SEED_B, SEED_A)
    assert "- 第 4 行 = 0.4·A₁ - 0.1·A₂" in product_markdown(prod, "zh") and "没有节省任何参数" in product_markdown(
        prod, "zh"
    )
    analysis = analyze_adapter(adapter_dir)
    assert "**14 个 LoRA 模块**" in adapter_markdown(analysis, "zh")
    cmp = compare_adapters(adapter_dir, adapter_dir)
    assert "14 个共同模块" in compare_markdown(cmp, "zh") and "shared modules" not in compare_markdown(cmp, "zh")
    figs = [
        spectrum_figure(res["singular_values"], 2, lang="zh"),
        heatmaps_figure(seed_matrix(0), res["approx"], res["residual"], 2, lang="zh"),
        product_figure(SEED_B, SEED_A, prod["delta_w"], lang="zh"),
        adapter_heatmap(analysis, "rank_90", lang="zh"),
    ]
    shown = json.dumps(
        [f.to_plotly_json()["layout"] for f in figs] + [f.to_plotly_json()["data"] for f in figs],
        ensure_ascii=False,
        default=str,
    )
    for word in ("奇异值", "累计能量", "行", "列", "层", "保留 90% 能量所需的秩"):
        assert word in shown
    assert not re.search(r"\b(index|cumulative|row|column|layer|energy)\b", shown)
    assert "%{y}" in shown and "<extra></extra>" in shown  # plotly's hover placeholders survive the translation
