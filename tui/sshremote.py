"""Transitional alias: ``tui.fleet`` still imports ``SshAddress`` from here while it is being
rewritten; the module lives at :mod:`tui.remote.ssh`. Removed once ``tui.fleet`` imports it
from there."""

from tui.remote.ssh import SshAddress

__all__ = ["SshAddress"]
