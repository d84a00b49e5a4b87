"""The command line (``vigil``): commands and their output, the client that reaches a local
agent, the status view, audit commands, service install and the demo command."""

from agent._rooms import lazy_exports

_EXPORTS = {
    "main": "commands",
    "build_parser": "parser",
    "ApiClient": "api_client",
    "render_status": "status_view",
}
__all__ = ["ApiClient", "build_parser", "main", "render_status"]
__getattr__ = lazy_exports(__name__, _EXPORTS)
