"""Reusable widgets of the Vigil TUI; each carries its own styles in ``DEFAULT_CSS``."""
