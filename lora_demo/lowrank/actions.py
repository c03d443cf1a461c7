"""LowRankActions: every computation of the Low-rank lab tab as a plain method (no gradio), owned by LabEngine as
`lab.lowrank`. The tab lays out components and draws what these methods return (arrays, dicts, Msg); the path
checks (the engine's path policy, names kept inside the runs folder) happen here, not in the UI."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lora_demo.errors import InputError
from lora_demo.i18n import Msg, msg
from lora_demo.lowrank.matrix import parse_matrix
from lora_demo.lowrank.model_weights import model_weight, weight_names
from lora_demo.lowrank.product import SEED_A, SEED_B, example_w0, lora_product
from lora_demo.lowrank.svd import energy, low_rank_approx, low_rank_plus_noise, rank_for_energy, seed_matrix
from lora_demo.paths import inside
from lora_demo.train.lineage import parent_of

# Where section 1's matrix comes from (the Preset dropdown's choices; labels translated by the tab's table).
PRESETS = ["Worked example: σ = 5.2, 3.1, 1.8, 0.3, 0.1", "Random low-rank + noise", "Weight of a model"]
WEIGHT_MODELS = ["smollm2-135m-instruct", "qwen3-tiny"]  # models whose weights the 'Weight of a model' preset reads


@dataclass
class Truncated:
    """A rank-k copy just written: its folder, the line saying so, and the refreshed adapter list (labels in
    English, as (label, path)) with the copy's path to pick."""

    path: Path
    message: Msg
    choices: list[tuple[str, str]]
    value: str


class LowRankActions:
    """The Low-rank lab's actions over a LabEngine's runs folder and path policy (`lab.runs_dir`, `lab.policy`)."""

    PRESETS = PRESETS
    WEIGHT_MODELS = WEIGHT_MODELS
    SEED_A = SEED_A  # the worked example's factors (section 2's starting B and A)
    SEED_B = SEED_B

    def __init__(self, lab):
        self.lab = lab

    # --- 1 · a matrix and its SVD ---
    @staticmethod
    def seed_matrix(seed: int = 0) -> np.ndarray:
        """The worked example's 5×5 matrix (σ = 5.2, 3.1, 1.8, 0.3, 0.1)."""
        return seed_matrix(seed)

    @staticmethod
    def parse(value, name: str | None = None) -> np.ndarray:
        """A matrix from JSON/CSV text or rows; one clear InputError naming `name` when it does not parse."""
        return parse_matrix(value, name)

    @staticmethod
    def svd(matrix, k) -> tuple[np.ndarray, dict]:
        """(the matrix, its rank-k approximation with the numbers lowrank.svd.low_rank_approx gives)."""
        m = parse_matrix(matrix)
        return m, low_rank_approx(m, k)

    @staticmethod
    def energy_curve(singular_values) -> tuple[np.ndarray, dict[float, int]]:
        """A spectrum's cumulative energy Σ_(i≤k) σᵢ²/Σσ² for k = 1..n, and the smallest k holding 90% and 99% of
        it (none for an empty spectrum): what a spectrum plot draws beside the bars."""
        s = np.asarray(singular_values, dtype=float)
        if not len(s):
            return s, {}
        return energy(s), {frac: rank_for_energy(s, frac) for frac in (0.90, 0.99)}

    def _check_weight_model(self, model_id) -> None:
        if model_id not in self.WEIGHT_MODELS:
            raise InputError(msg("Pick one of {models}.", models=", ".join(self.WEIGHT_MODELS)))

    def preset(self, preset: str, d, n, true_rank, noise, seed, model_id: str, weight: str) -> np.ndarray:
        """The matrix a preset gives: the worked example, random low-rank plus noise, or a weight of a model."""
        if preset == self.PRESETS[0]:
            return seed_matrix(int(seed or 0))
        if preset == self.PRESETS[1]:
            return low_rank_plus_noise(d, n, true_rank, float(noise), int(seed or 0))
        if not weight:
            raise InputError(msg("Pick a weight matrix of the model first."))
        self._check_weight_model(model_id)
        return model_weight(model_id, weight)

    def weight_names(self, model_id: str) -> list[str]:
        """The 2-D projection weights of one of WEIGHT_MODELS, in layer order."""
        self._check_weight_model(model_id)
        return weight_names(model_id)

    # --- 2 · the LoRA product ---
    @staticmethod
    def product(b, a, random_w0: bool) -> dict:
        """lora_product's numbers for ΔW = B·A, plus the parsed factors ("B", "A") and the W0 of the picture ("W0":
        a fixed random stand-in, or None)."""
        res = lora_product(b, a)
        w0 = example_w0(*res["shape"]) if random_w0 else None
        return {**res, "B": parse_matrix(b, msg("B matrix")), "A": parse_matrix(a, msg("A matrix")), "W0": w0}

    # --- 3 · trained adapters ---
    def adapter_path(self, choice: str | None, typed: str | None) -> str:
        """The adapter folder a request names (typed wins over the list's pick), checked by the path policy."""
        path = (typed or "").strip() or (choice or "")
        if not path:
            raise InputError(msg("Pick an adapter from the list, or type the path of a PEFT adapter folder."))
        return str(self.lab.policy.check(path, msg("adapter folder")))

    def analyze(self, choice, typed) -> dict:
        """Per-module spectra and measures of an adapter's ΔW (lowrank.adapter.analyze_adapter)."""
        from lora_demo.lowrank.adapter import analyze_adapter  # deferred: imports torch

        return analyze_adapter(self.adapter_path(choice, typed))

    def truncate(self, choice, typed, k, name) -> Truncated:
        """Write a rank-k copy of an adapter as a new run folder `name` of the runs folder."""
        from lora_demo.lowrank.adapter import truncate_adapter  # deferred: imports torch

        runs = self.lab.runs_dir
        out = truncate_adapter(self.adapter_path(choice, typed), k, inside(runs, name, msg("adapter name")))
        done = msg(
            "Wrote the rank-{k} copy to `{out}`. Load it in the Chat tab, or analyze it here.", k=int(k), out=str(out)
        )
        return Truncated(out, done, self.lab.adapter_choices(), str(Path(runs) / out.name))

    def compare_parent(self, choice, typed) -> dict:
        """The picked adapter against the one it was continued from, module by module (lowrank.compare)."""
        from lora_demo.lowrank.compare import compare_adapters  # deferred: imports torch

        child = self.adapter_path(choice, typed)
        parent = str(self.lab.policy.check(parent_of(child), msg("parent adapter")))
        return compare_adapters(parent, child)
