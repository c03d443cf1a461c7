"""Low-rank lab engine: SVD and rank-k approximation, the LoRA product, and spectra of trained adapters."""

from lora_demo.lowrank.matrix import parse_matrix
from lora_demo.lowrank.product import SEED_A, SEED_B, example_w0, lora_product
from lora_demo.lowrank.svd import low_rank_approx, low_rank_plus_noise, param_counts, seed_matrix

# The adapter functions need torch: imported on first use (PEP 562), so the CLI's --help and the matrix demos do not
# import it.
_ADAPTER = ("analyze_adapter", "factor_svd", "load_lora_factors", "truncate_adapter")


def __getattr__(name: str):
    if name in _ADAPTER:
        from lora_demo.lowrank import adapter  # the torch half, loaded on first use

        return getattr(adapter, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "SEED_A",
    "SEED_B",
    "analyze_adapter",
    "example_w0",
    "factor_svd",
    "load_lora_factors",
    "lora_product",
    "low_rank_approx",
    "low_rank_plus_noise",
    "param_counts",
    "parse_matrix",
    "seed_matrix",
    "truncate_adapter",
]
