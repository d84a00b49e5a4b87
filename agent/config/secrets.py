"""Reading a secret the config names but never holds: from an environment variable or a file.

A model's API key (``api_key_env`` / ``api_key_file``) and a notify channel's secrets
(``secret_env``, ``routing_key_file``, ``password_env``, ...) are read the same way, once, when
the file is loaded, so a missing secret refuses the config up front, naming the field. The value
is stripped (a trailing newline in a file, a variable holding only spaces, hold no secret); the
errors name the variable or the file, never the value.

The names of the variables read are remembered (:func:`secret_env_names`), so the supervisor
can keep them out of the model servers' environment: a secret the agent holds is not theirs.
"""

from __future__ import annotations

import os

from storage.tomlschema import Invalid, Part, expand_home

_SECRET_ENV: set[str] = set()
"""Every variable a config loaded by this process read a secret from. Only ever grows: a
variable once named as a secret stays one after a reload drops it (it still holds it)."""


def secret_env_names() -> frozenset[str]:
    """The environment variables any config loaded so far named as holding a secret."""
    return frozenset(_SECRET_ENV)


def read_secret(
    env: str | None,
    file: str | None,
    at: tuple[Part, ...],
    field: str,
    what: str,
    *,
    required: bool = False,
) -> str | None:
    """The secret from ``<field>_env`` or ``<field>_file``, or None when neither is given.

    Args:
        env: the environment variable's name (the ``<field>_env`` key), if given.
        file: the file's path (the ``<field>_file`` key), if given.
        at: where the table sits (``("model", 1)``); the error names ``<field>_env`` etc.
        field: the secret's key stem (``api_key``).
        what: the secret in words, for messages (``the API key``).
        required: refuse a table that gives neither.

    Raises:
        Invalid: both given, neither given when required, or the variable or file unusable.
    """
    if env and file:
        raise Invalid((*at, f"{field}_file"), f"expected {field}_env or {field}_file, not both")
    if env:
        _SECRET_ENV.add(env)
        value = os.environ.get(env, "").strip()
        if not value:
            raise Invalid(
                (*at, f"{field}_env"),
                f"the environment variable {env} is unset or empty (expected it to hold {what})",
            )
        return value
    if file:
        where = (*at, f"{field}_file")
        try:
            path = expand_home(file)
        except ValueError as exc:
            raise Invalid(where, str(exc)) from None
        try:
            value = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise Invalid(where, f"cannot read {path}: {exc.strerror}") from None
        except UnicodeDecodeError:
            # An Invalid like any other: a reload catches only ConfigErrors.
            raise Invalid(where, f"{path} is not UTF-8 text (expected {what})") from None
        except ValueError:  # a NUL in the path: no file can have that name
            raise Invalid(
                where, f"expected a file path without NUL characters, got {file!r}"
            ) from None
        if not value:
            raise Invalid(where, f"{path} is empty (expected {what})")
        return value
    if required:
        raise Invalid(
            (*at, f"{field}_env"),
            f"missing {what}; expected {field}_env (an environment variable) or "
            f"{field}_file (a file) holding it",
        )
    return None
