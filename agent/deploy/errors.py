"""The one error a deploy request is refused with: what was wrong, and the HTTP status that
says whose fault it is (400 bad input, 403 not allowed, 404 unknown, 409 not now)."""

from __future__ import annotations

__all__ = ["DeployError"]


class DeployError(Exception):
    """A deploy, approval, rollback or record that cannot be done; the message says why and
    what was expected. Nothing was switched when it is raised."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status
