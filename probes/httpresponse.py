"""A response of :class:`probes.httpclient.HttpClient`: its head, and its body read as it comes.

Split from the client so each stays small: the client sends requests and keeps connections;
a :class:`Response` reads one answer's body through :class:`probes.http1.Body` and, when
released, hands its connection back (body read to its end, the server keeps it open) or
closes it (anything else: a half-read body would be read as the next answer's head).
"""

from __future__ import annotations

import asyncio
import codecs
import os
from collections.abc import Callable
from dataclasses import dataclass

from probes.http1 import Body, Head, Headers, WireError

__all__ = ["Connection", "Response", "reason"]


@dataclass(eq=False)
class Connection:
    """One kept-alive connection to an origin (scheme, host, port)."""

    origin: tuple[str, str, int]
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    idle_since: float = 0.0

    def alive(self) -> bool:
        """Not closed by either side as far as the loop has seen."""
        return not (
            self.writer.is_closing() or self.reader.at_eof() or self.reader.exception() is not None
        )

    def close(self) -> None:
        self.writer.close()


class Response:
    """An answer whose head has arrived; its body is read through it.

    Use it inside ``async with client.get(...) as resp``, which gives the connection back
    (body read to the end) or closes it (anything else) when the block ends.
    """

    def __init__(
        self,
        give_back: Callable[[Connection], None],
        conn: Connection,
        url: str,
        method: str,
        head: Head,
        deadline: float | None,
    ) -> None:
        self.url = url
        self.method = method
        self.status = head.status
        self.reason = head.reason
        self.version = head.version
        self.headers: Headers = head.headers
        self._give_back = give_back
        self._conn: Connection | None = conn
        self._head = head
        self._body = Body(conn.reader, head, method)
        coding = head.headers.get("content-encoding", "identity").strip().lower()
        if coding not in ("", "identity"):  # asked for identity; the caller closes the connection
            raise WireError("protocol_error", f"unexpected Content-Encoding {coding!r}")
        # One timer for the whole body rather than a timeout scope per read: a streamed answer
        # is hundreds of reads, and a scope each would schedule and cancel a timer per token
        # (aiohttp too keeps one timer per request). At the deadline the connection's reader
        # is failed, so the read in progress, or the next one, raises TimeoutError.
        self._timer: asyncio.TimerHandle | None = None
        if deadline is not None and not self._body.done:
            self._timer = asyncio.get_running_loop().call_at(deadline, self._expire)

    @property
    def at_eof(self) -> bool:
        """Whether the whole body has been read."""
        return self._body.done

    @property
    def body_bytes(self) -> int:
        """Body bytes read so far."""
        return self._body.bytes_read

    async def read_chunk(self) -> bytes:
        """The next piece of the body as soon as any has arrived; ``b""`` at its end.

        Raises:
            WireError: ``protocol_error`` when the connection breaks off mid-body or the
                framing is malformed.
            TimeoutError: the request's time limit is spent.
        """
        if self._body.done:
            return b""
        if self._conn is None:
            raise RuntimeError("the response was released before its body was read")
        try:
            return await self._body.read()
        except TimeoutError:  # an OSError too, since Python 3.10: not a lost connection
            raise
        except asyncio.IncompleteReadError:
            raise WireError(
                "protocol_error",
                f"connection lost mid-body, after {self._body.bytes_read} bytes",
            ) from None
        except OSError as exc:
            raise WireError(
                "protocol_error",
                f"connection lost mid-body, after {self._body.bytes_read} bytes: {reason(exc)}",
            ) from None

    def chunks(self) -> _Chunks:
        """``async for piece in resp.chunks()``: the body as it arrives (see :meth:`read_chunk`)."""
        return _Chunks(self)

    async def read(self, limit: int | None = None) -> bytes:
        """The body, whole or its first ``limit`` bytes (the rest is left unread, and the
        connection then closed: an error page need not be read whole)."""
        parts: list[bytes] = []
        size = 0
        while limit is None or size < limit:
            piece = await self.read_chunk()
            if not piece:
                break
            parts.append(piece)
            size += len(piece)
        data = b"".join(parts)
        return data if limit is None else data[:limit]

    async def text(self, limit: int | None = None, errors: str = "replace") -> str:
        """The body (see :meth:`read`) decoded by its ``charset``, UTF-8 when none or unknown."""
        data = await self.read(limit)
        charset = "utf-8"
        for param in self.headers.get("content-type", "").split(";")[1:]:
            name, _, value = param.partition("=")
            if name.strip().lower() == "charset" and value.strip():
                charset = value.strip().strip('"')
        try:
            codecs.lookup(charset)
        except LookupError:
            charset = "utf-8"
        return data.decode(charset, errors=errors)

    async def drain(self, limit: int, within_s: float | None = None) -> bool:
        """Read and drop the rest of the body, up to ``limit`` bytes and ``within_s`` seconds,
        so the connection can be reused. Returns whether the body ended; never raises for a
        broken or slow body (the connection is then simply closed on release)."""
        size = 0
        try:
            async with asyncio.timeout(within_s):
                while size <= limit:
                    piece = await self.read_chunk()
                    if not piece:
                        return True
                    size += len(piece)
        except (TimeoutError, WireError):
            pass
        return False

    def release(self) -> None:
        """Give the connection back (body read to its end, server keeps it open) or close it.
        Called by the ``async with`` block's end; calling it again does nothing."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._body.done and not self._body.to_eof and self._head.keep_alive():
            self._give_back(conn)
        else:
            conn.close()

    def _expire(self) -> None:
        self._timer = None
        if self._conn is not None and not self._body.done:
            self._conn.reader.set_exception(TimeoutError("the request's time limit is spent"))

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason!r} from {self.method} {self.url}>"


class _Chunks:
    def __init__(self, resp: Response) -> None:
        self._resp = resp

    def __aiter__(self) -> _Chunks:
        return self

    async def __anext__(self) -> bytes:
        piece = await self._resp.read_chunk()
        if not piece:
            raise StopAsyncIteration
        return piece


def reason(exc: OSError) -> str:
    """What the OS said, in lower case (``connection reset by peer``)."""
    return (os.strerror(exc.errno) if exc.errno else str(exc) or type(exc).__name__).lower()
