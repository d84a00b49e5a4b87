"""The events view's filter fields: empty ones show a dim italic "no filter" hint, never an
example value that reads like a filter in force; a filter in force is the field's value."""

from __future__ import annotations

from textual.widgets import Input, Static

from tests.fakes.triage_agent import TriageAgent
from tests.tui.test_host_screen import wait_for
from tests.tui.test_triage_views import count, make_app, ready
from tui.screens.events import EventsScreen


def hint_segments(field: Input) -> list[tuple[str, bool]]:
    """(text, italic) of the visible, non-blank pieces of the field's line."""
    return [
        (s.text.strip(), bool(s.style and s.style.italic))
        for s in field.render_line(0)
        if s.text.strip()
    ]


async def test_empty_filters_show_placeholders_not_example_values(
    triage_agent: TriageAgent,
) -> None:
    app = make_app(triage_agent)
    async with app.run_test(size=(80, 24)) as pilot:
        host = await ready(pilot, app)
        host.open_events()
        await wait_for(pilot, lambda: count(app, "#events-table") == 8)
        screen = app.screen
        assert isinstance(screen, EventsScreen)
        for name, hint in (("kind", "all · f"), ("subject", "all · b"), ("search", "none · /")):
            field = screen.query_one(f"#{name}", Input)
            assert field.value == ""
            assert field.placeholder == hint
            # No example a filter could hold ("process.", "model:iris") is shown as the hint.
            assert not any(c in field.placeholder for c in ".:"), field.placeholder
            assert hint_segments(field) == [(hint, True)], hint_segments(field)
        title = screen.query_one("#title", Static).render()
        assert str(title) == "events · 8 of the last 8"  # and no filter named in the title


async def test_a_filter_in_force_is_the_fields_value(triage_agent: TriageAgent) -> None:
    app = make_app(triage_agent)
    async with app.run_test(size=(80, 24)) as pilot:
        host = await ready(pilot, app)
        host.open_events(kind="process.", subject="process:llama-cpp")
        await wait_for(pilot, lambda: count(app, "#events-table") == 2)
        screen = app.screen
        kind = screen.query_one("#kind", Input)
        assert kind.value == "process."
        assert all(not italic for _, italic in hint_segments(kind))
        assert screen.query_one("#subject", Input).value == "process:llama-cpp"
        title = str(screen.query_one("#title", Static).render())
        assert "kind process.*" in title and "process:llama-cpp" in title
