"""The Vigil TUI: a Textual app that talks to agents only through their HTTP API.

Layers, each importing only those below it (import-linter holds them, and no cycles):

- ``tui.app``: the App classes and the entry points the CLI calls, little else.
- ``tui.screens``: one screen per view (fleet, host, model, process, incidents, events) and
  the dialogs; each owns its handlers and workers.
- ``tui.widgets``: reusable widgets, each with its own ``DEFAULT_CSS``.
- ``tui.view``: what is shown, without Textual: view models, table rows and cells,
  formatting that keeps agents' text as data, operator actions.
- ``tui.remote``: how agents are reached, without Textual: the HTTP client, the API's
  records, plain and ``ssh``-forwarded transports.

``tui.fleet`` reads and checks the fleet file (which agents, and how to reach each).
"""
