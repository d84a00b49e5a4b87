"""What the TUI shows, without Textual: view models (one host, a fleet), the rows and cells
of its tables, formatting that keeps agents' text as data, and the operator actions.

Pure functions and small classes over :mod:`tui.remote`'s records, tested without an app;
``tui.widgets`` and ``tui.screens`` draw them.
"""
