"""Summary templates: named values substituted into plain text, and nothing else.

A template is ``str.format`` syntax restricted to bare names: ``{model} is {state} since
{since}``, ``{value:.1f}% > {threshold}``. Attribute and index access (``{x.__class__}``,
``{x[0]}``), positional fields and conversions are refused when the rule is validated, as are
names the rule does not provide, so a template can never reach into the agent's objects and a
typo is a config error rather than a blank in a page.

The result is plain text. It may carry what a model server said (an error text, a label
value); escaping it for a channel's format (Slack mrkdwn, HTML mail) is the channel's job.
"""

from __future__ import annotations

import string
from collections.abc import Collection, Mapping

_FORMATTER = string.Formatter()


def template_fields(template: str) -> list[str]:
    """The field names a template uses.

    Raises:
        ValueError: the template is malformed or uses more than a bare name (attribute or
            index access, a positional field, a conversion, a nested field in a format spec).
    """
    names: list[str] = []
    try:
        parsed = list(_FORMATTER.parse(template))
    except ValueError as exc:
        raise ValueError(f"malformed template: {exc}") from None
    for _literal, name, spec, conversion in parsed:
        if name is None:
            continue
        if not name:
            raise ValueError("positional field {} is not allowed: name the value, e.g. {model}")
        if not name.isidentifier():
            raise ValueError(
                f"field {{{name}}} is not a bare name: attribute and index access are not allowed"
            )
        if conversion is not None:
            raise ValueError(f"field {{{name}!{conversion}}}: conversions are not allowed")
        if spec and ("{" in spec or "}" in spec):
            raise ValueError(f"field {{{name}}}: nested fields in a format spec are not allowed")
        names.append(name)
    return names


def check_template(template: str, known: Collection[str]) -> str | None:
    """Why a template is refused for a rule providing ``known`` names, or None when it is fine."""
    try:
        names = template_fields(template)
    except ValueError as exc:
        return str(exc)
    unknown = sorted({n for n in names if n not in known})
    if unknown:
        listed = ", ".join(f"{{{n}}}" for n in unknown)
        offered = ", ".join(sorted(known))
        return f"unknown field {listed}; this rule offers {offered}"
    return None


def render(template: str, values: Mapping[str, object]) -> str:
    """Fill a (validated) template. A name without a value renders as ``?``; a format spec
    that does not suit the value (``{model:.1f}``) falls back to the value's plain text."""
    out: list[str] = []
    try:
        parsed = list(_FORMATTER.parse(template))
    except ValueError:
        return template
    for literal, name, spec, _conversion in parsed:
        out.append(literal)
        if name is None:
            continue
        value = values.get(name, "?")
        try:
            out.append(format(value, spec or ""))
        except (ValueError, TypeError):
            out.append(str(value))
    return "".join(out)
