"""Chat: base vs tuned side by side from one loaded model."""
