"""How the TUI reaches agents, without Textual: the async HTTP client, the API's record types,
and the transports (plain HTTP, or the user's own ``ssh`` forwarding a local port).

Nothing here imports Textual or anything above it in ``tui``; the view models build on this.
"""
