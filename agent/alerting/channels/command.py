"""exec: run a command with the notification's JSON document on its stdin.

The command is an argv (no shell). It gets ``VIGIL_NOTIFICATION_ID`` and
``VIGIL_NOTIFICATION_KIND`` in its environment besides the agent's own, must finish within
``timeout_s`` (it is killed otherwise) and exit 0 for the notification to count as delivered;
otherwise the result carries the exit status and the tail of its stderr.
"""

from __future__ import annotations

import asyncio
import contextlib
import os

from agent.alerting.channels.base import Channel, SendResult
from agent.alerting.channels.http import json_bytes
from agent.alerting.channels.render import document
from agent.alerting.channels.settings import CommandSettings
from agent.alerting.model import NotificationRequest
from storage import private
from storage.text import printable

STDERR_TAIL = 500


class CommandChannel(Channel):
    """Runs a program per notification."""

    kind = "exec"
    settings: CommandSettings

    async def send(self, request: NotificationRequest) -> SendResult:
        argv = self.settings.argv
        env = {
            **os.environ,
            "VIGIL_NOTIFICATION_ID": request.notification_id,
            "VIGIL_NOTIFICATION_KIND": str(request.kind),
        }
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                env=env,
                start_new_session=True,
                umask=private.child_umask(),  # the agent's own is 077
            )
        except OSError as exc:
            return SendResult.failed(f"cannot run {printable(argv[0])}: {exc.strerror or exc}")
        try:
            _, err = await asyncio.wait_for(
                proc.communicate(json_bytes(document(request)) + b"\n"), self.settings.timeout_s
            )
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            return SendResult.failed(f"{printable(argv[0])} ran past {self.settings.timeout_s:g}s")
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise
        if proc.returncode == 0:
            return SendResult.accepted(f"{printable(argv[0])} exited 0")
        tail = printable(err.decode(errors="replace").strip()[-STDERR_TAIL:])
        return SendResult.failed(
            f"{printable(argv[0])} exited {proc.returncode}" + (f": {tail}" if tail else "")
        )
