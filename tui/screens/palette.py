"""``:`` (or ``ctrl+p``): jump to any view of the agent by name, k9s style.

Hits are built from ``Content`` objects, never from strings: the command palette parses a
string prompt as markup, and model and process names come from the agent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Matcher, Provider
from textual.content import Content

from tui.screens.nav import HostNavigator
from tui.view.fmt import clean

Jump = tuple[str, Callable[[], object], str]
"""(text shown and matched, what to do, a fixed help line)."""


def highlighted(matcher: Matcher, text: str) -> Content:
    """``text`` as literal content with the matched letters styled (``Matcher.highlight``
    would parse ``text`` as markup)."""
    content = Content(text)
    score, offsets = matcher.fuzzy_search.match(matcher.query, text)
    if score:
        for offset in offsets:
            if not text[offset].isspace():
                content = content.stylize(matcher.match_style, offset, offset + 1)
    return content


class JumpProvider(Provider):
    """The views of the agent whose host screen is nearest the top of the stack.

    The host screen is found by what it does (:class:`HostNavigator`), not by its class: it
    imports the views that offer this palette.
    """

    def _host(self) -> HostNavigator | None:
        for screen in reversed(self.app.screen_stack):
            if isinstance(screen, HostNavigator):
                return screen
        return None

    def jumps(self) -> Iterator[Jump]:
        """Every place to go, then the host-wide actions."""
        host = self._host()
        if host is None:
            return
        yield "host", host.go_home, "resources, models and processes"
        yield "incidents", host.open_incidents, "open, acknowledged and resolved incidents"
        yield "events", host.open_events, "the audit trail, filtered and searchable"
        yield "alerts", host.open_alerts, "firing, pending and silenced alerts, silences, delivery"
        yield (
            "deployments",
            host.open_deployments,
            "deploys and their live progress, versions; approve, roll back",
        )
        status = host.status
        if status is not None:
            for model in status.models:
                yield (
                    f"model {clean(model.name, 64)}",
                    partial(host.open_model, model.name),
                    "latency charts, errors, probe runs, incidents, deployments",
                )
            for proc in status.processes:
                yield (
                    f"process {clean(proc.name, 64)}",
                    partial(host.open_process, proc.name),
                    "state, restarts and their reasons, live log",
                )
        yield "export report", host.action_export_report, "save the host report as HTML"

    async def discover(self) -> Hits:
        """Everything, in order, before anything is typed."""
        for text, command, help_text in self.jumps():
            yield DiscoveryHit(Content(text), command, text=text, help=help_text)

    async def search(self, query: str) -> Hits:
        """Fuzzy matches of what was typed."""
        matcher = self.matcher(query)
        for text, command, help_text in self.jumps():
            score = matcher.match(text)
            if score > 0:
                yield Hit(score, highlighted(matcher, text), command, text=text, help=help_text)
