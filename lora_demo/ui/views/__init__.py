"""Views of the UI: HTML panels, plots and Markdown built from the engine's plain data (no engine calls)."""
