"""The one error a configuration file is refused with."""

from __future__ import annotations

from storage.tomlschema import SchemaError


class ConfigError(SchemaError):
    """A configuration file was refused.

    Attributes:
        path: the file.
        field: dotted path of the offending field (``model[1].interval``), or None.
        line: 1-based line in the file, when it could be located.
        reason: what was wrong and what was expected.
    """
