"""Screens of the Vigil TUI; each owns its handlers and its workers."""
