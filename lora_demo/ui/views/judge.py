"""The token view of the Chat tab's judging section: each token of the tuned answer coloured by how much likelier
(green) or less likely (red) the adapter made it, from the engine's (text, log-probability change) pairs."""

from __future__ import annotations

from lora_demo.i18n import msg
from lora_demo.ui.common import show

# A token whose log p_tuned − log p_base (nats) reaches a bound gets that category, drawn in its colour; within
# ±LIKELIER it stays uncoloured (about the same). 0.25 nats: ×1.28 the probability; 2: ×7.4.
LIKELIER, MUCH_LIKELIER = 0.25, 2.0
TOKEN_SHADES = {
    "much likelier": "#16a34a",  # green, dark
    "likelier": "#86efac",  # green, light
    "less likely": "#fca5a5",  # red, light
    "much less likely": "#dc2626",  # red, dark
}
# The categories as the legend names them (in the session's language).
SHADES = {
    "much likelier": msg("much likelier"),
    "likelier": msg("likelier"),
    "less likely": msg("less likely"),
    "much less likely": msg("much less likely"),
}


def token_shade(delta: float) -> str | None:
    """The category (a key of TOKEN_SHADES) of one token's log-probability change, None when about the same."""
    if delta >= MUCH_LIKELIER:
        return "much likelier"
    if delta >= LIKELIER:
        return "likelier"
    if delta <= -MUCH_LIKELIER:
        return "much less likely"
    if delta <= -LIKELIER:
        return "less likely"
    return None


def token_shades(diff: list[tuple[str, float]]) -> list[tuple[str, str | None]]:
    """The engine's token_diff pairs (text, delta) as (text, category or None): green likelier, red less likely,
    darker by more (TOKEN_SHADES gives each category's colour)."""
    return [(text, token_shade(d)) for text, d in diff]


def shade_colors() -> dict[str, str]:
    """The token view's color_map: each category's name in this session's language → its colour."""
    return {str(show(SHADES[name])): color for name, color in TOKEN_SHADES.items()}  # (plain str keys: JSON)


def shaded_tokens(diff: list[tuple[str, float]]) -> list[tuple[str, str | None]]:
    """The HighlightedText value of a token_diff: each token with its category named in this session's language."""
    return [(text, str(show(SHADES[shade])) if shade else None) for text, shade in token_shades(diff)]
