"""Store and forward: the samples the agent stored, sent to a Prometheus remote-write receiver.

Every ``interval`` the forwarder reads what was stored after each series' cursor
(:mod:`storage.forwardcursor`), at most ``max_samples_per_request`` samples a request, encodes
them (:mod:`agent.forward.wire`) and POSTs them; once the receiver accepts a request the cursors
move past its samples (in memory at once, in the database through the writer). It sends batch
after batch until a read finds nothing more, so after an outage it replays the backlog from
where it stopped. A request that fails is sent again after a backoff (``backoff_initial``,
doubled each time up to ``backoff_max``, with 10 % jitter), and nothing moves past it:

- no connection, no answer within ``timeout``, 5xx, 408 or 429: the receiver is down or busy;
- any other 4xx but 400, 409, 413 and 422 (401, 403, 404 ...): the receiver refuses every
  request (credentials, URL): retried too, unlike Prometheus's own sender, because skipping
  would throw away everything until someone fixes the config, while the cursor can wait;
- 400, 409, 413 and 422 refuse *this batch* (an out-of-order or too-old sample, too large a
  body): the batch is split in two and each half sent, down to single samples or
  :data:`MAX_SPLIT_REQUESTS` requests, so only what the receiver refuses is skipped. It is
  counted (``samples_rejected``), logged, and recorded as a ``remote_write.rejected`` event
  (at most one a minute, counting what it covers).

Samples that retention removed before they were sent are counted by retention itself and
reported here as ``remote_write.dropped`` (see :mod:`storage.forwardcursor`). State changes
are events too: ``remote_write.failing`` once when requests start failing, and
``remote_write.recovered`` when one is accepted again.

Nothing here can stop the agent or slow its supervision: reads and encoding run in a thread,
a failed read is logged and tried again at the next turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.config.remotewrite import RemoteWriteConfig
from agent.forward import wire
from agent.forward.naming import Catalog
from agent.forward.state import ForwardState, ForwardStats
from probes.base import now_ms
from probes.httpclient import HttpClient, InvalidURL, WireError
from storage import forwardcursor as fc
from storage.db import connect
from storage.records import Event
from storage.writer import Writer

if TYPE_CHECKING:
    from collections.abc import Iterator

    from agent.serve.exposition import Family

log = logging.getLogger("vigil.forward")

MAX_SPLIT_REQUESTS = 32
"""Requests one refused batch may be split into before the rest of it is skipped whole."""
SPLIT_STATUSES = frozenset({400, 409, 413, 422})
"""Answers that refuse the batch's content: split it, skip what is refused."""
RETRY_4XX = frozenset({408, 429})
REJECTED_EVENT_EVERY_MS = 60_000
ERROR_TEXT = 300
"""Characters of a receiver's error answer kept (logs, events, the API)."""


@dataclass(slots=True)
class _Part:
    """Samples of a batch to send in one request: (series id, labels, times, values)."""

    chunks: list[tuple[int, wire.Labels, list[int], list[float]]]

    @property
    def samples(self) -> int:
        return sum(len(c[2]) for c in self.chunks)

    def halves(self) -> tuple[_Part, _Part]:
        """Two parts of about half the samples each, in order (a series may be cut)."""
        half = self.samples // 2
        left: list[tuple[int, wire.Labels, list[int], list[float]]] = []
        right: list[tuple[int, wire.Labels, list[int], list[float]]] = []
        seen = 0
        for sid, labels, ts, vals in self.chunks:
            if seen >= half:
                right.append((sid, labels, ts, vals))
            elif seen + len(ts) <= half:
                left.append((sid, labels, ts, vals))
            else:
                cut = half - seen
                left.append((sid, labels, ts[:cut], vals[:cut]))
                right.append((sid, labels, ts[cut:], vals[cut:]))
            seen += len(ts)
        return _Part(left), _Part(right)

    def ends(self) -> dict[int, int]:
        """The newest time of each series in the part: where its cursor moves once sent."""
        out: dict[int, int] = {}
        for sid, _, ts, _ in self.chunks:
            if ts:
                out[sid] = max(out.get(sid, ts[-1]), ts[-1])
        return out


@dataclass(slots=True)
class _Rejections:
    """Refused samples not yet recorded in an event."""

    samples: int = 0
    status: int = 0
    error: str = ""
    last_event_ms: int = 0


class _Retry(Exception):
    """The request failed in a way that is retried after a backoff."""

    def __init__(self, reason: str, error: str) -> None:
        super().__init__(error)
        self.reason = reason
        self.error = error


class RemoteWrite:
    """The forwarder: ``apply`` a config (or None) to start, change or stop it."""

    def __init__(
        self,
        writer: Writer,
        db_path: Path,
        emit: Callable[[Event], None],
        *,
        started_ms: int,
    ) -> None:
        self.writer = writer
        self.db_path = db_path
        self.emit = emit
        self.started_ms = started_ms
        self.config: RemoteWriteConfig | None = None
        self.host = ""
        self.stats = ForwardStats()
        self._task: asyncio.Task[None] | None = None
        self._client: HttpClient | None = None
        self._conn: sqlite3.Connection | None = None
        self._catalog: Catalog | None = None
        self._cursors: dict[int, int] | None = None
        """Authoritative while the agent runs; the database's copy follows through the writer."""
        self._start_ms = 0
        self._dropped_seen = 0
        self._rejections = _Rejections()
        self._wake = asyncio.Event()
        self._stopping = False
        self._applied = False
        self._extra: tuple[tuple[str, str], ...] = ()
        self._failing_since_ms: int | None = None

    # --- lifecycle -----------------------------------------------------------------------

    async def apply(
        self,
        cfg: RemoteWriteConfig | None,
        host: str,
        host_labels: tuple[tuple[str, str], ...] = (),
    ) -> None:
        """Make ``cfg`` the running config: start, restart with new settings, or stop (None:
        the target and its cursors are forgotten, so turning it on again starts then).

        Args:
            host: the ``[agent] host``, every series' ``instance``.
            host_labels: the ``[agent] labels``, on every series under ``cfg.labels``.
        """
        extra = tuple(
            sorted({"job": "vigil", **dict(host_labels), **dict(cfg.labels if cfg else ())}.items())
        )
        if cfg == self.config and host == self.host and extra == self._extra:
            return
        await self.stop()
        was, self.config, self.host, self._extra = self.config, cfg, host, extra
        first, self._applied = not self._applied, True
        if cfg is None:
            if was is not None or first:
                self._cursors = None
                self.writer.run_task(fc.forget_targets)
            return
        self._catalog = Catalog(host, extra)
        if was is None:
            # At the agent's start everything it stores is sent; turned on by a reload, what
            # is stored from then on.
            self.stats = ForwardStats(started_ms=self.started_ms if first else now_ms())
        self.stats.url = cfg.where
        self._task = asyncio.create_task(self._run(cfg), name="remote-write")
        log.info(
            "remote_write started url=%s interval_s=%g max_samples=%d",
            cfg.where,
            cfg.interval_s,
            cfg.max_samples,
        )

    async def stop(self, *, final: bool = False, grace_s: float = 5.0) -> None:
        """Stop sending; a request in flight gets ``grace_s`` to be answered first, so its
        samples are not sent twice by the next agent.

        Args:
            final: the agent is stopping: unless the receiver is failing, what the writer
                holds is committed and sent too, within ``grace_s``, so the receiver has
                the agent's last samples now rather than at its next start.
        """
        task, self._task = self._task, None
        if task is not None:
            self._stopping = True
            self._wake.set()
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(task), grace_s)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            cfg = self.config
            if final and cfg is not None and self.stats.state != ForwardState.RETRYING:
                await self._last_send(cfg, grace_s)
        if self._client is not None:
            await self._client.close()
            self._client = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def collect(self) -> Iterator[Family]:
        """The ``vigil_remote_write_*`` families (``/metrics``); none when not configured."""
        if self.config is None:
            return iter(())
        return self.stats.families(now_ms())

    def state(self) -> dict[str, Any]:
        """``GET /api/v1/remote_write``."""
        if self.config is None:
            return {"configured": False}
        return self.stats.as_json(now_ms())

    async def _last_send(self, cfg: RemoteWriteConfig, within_s: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within_s
        await asyncio.to_thread(self.writer.flush, within_s / 2)
        self._stopping = False
        try:
            await asyncio.wait_for(self._drain(cfg), max(0.1, deadline - loop.time()))
        except (TimeoutError, sqlite3.Error) as exc:
            log.warning("remote_write last send not finished error=%r", str(exc) or "timeout")
        finally:
            self._stopping = True

    # --- the loop ------------------------------------------------------------------------

    async def _run(self, cfg: RemoteWriteConfig) -> None:
        self._stopping = False
        backoff = cfg.backoff_initial_s
        while not self._stopping:
            try:
                ok = await self._drain(cfg)
            except sqlite3.Error as exc:  # a locked or failing database: the next turn
                log.warning("remote_write read failed error=%r", str(exc))
                ok = True
            if self._stopping:
                return
            if ok:
                backoff = cfg.backoff_initial_s
                wait = cfg.interval_s
            else:
                wait = backoff * random.uniform(0.9, 1.1)  # noqa: S311 - spreading retries
                backoff = min(backoff * 2, cfg.backoff_max_s)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)

    async def _drain(self, cfg: RemoteWriteConfig) -> bool:
        """Send batch after batch until a read finds nothing more; False once a request
        failed (retried after a backoff)."""
        await asyncio.to_thread(self._open)
        self._report_dropped(*await asyncio.to_thread(self._dropped))
        while not self._stopping:
            read_at = now_ms()
            part, full = await asyncio.to_thread(self._read, cfg.max_samples)
            if part.samples:
                try:
                    await self._send(cfg, part, [MAX_SPLIT_REQUESTS])
                except _Retry as exc:
                    self._failing(exc)
                    return False
                self._recovered()
            if not full:
                self.stats.sent_through_ms = read_at
                self.stats.state = ForwardState.OK
                self._flush_rejections(force=False)
                return True
            self.stats.state = ForwardState.CATCHING_UP
        return True

    # --- reading (in a thread) -----------------------------------------------------------

    def _open(self) -> None:
        if self._conn is None:
            self._conn = connect(self.db_path, readonly=True)
        if self._cursors is not None:
            return
        stored = fc.load_target(self._conn, fc.TARGET)
        if stored is None:
            self._start_ms = self.stats.started_ms
            self._cursors = {}
            self._dropped_seen = 0
            start = self._start_ms
            self.writer.run_task(lambda conn: fc.open_target(conn, fc.TARGET, start))
        else:
            self._start_ms = stored.start_ms
            self._cursors = stored.cursors
            self._dropped_seen = stored.dropped_reported

    def _read(self, max_samples: int) -> tuple[_Part, bool]:
        assert self._conn is not None and self._catalog is not None and self._cursors is not None
        catalog = self._catalog
        catalog.add(fc.series_after(self._conn, catalog.last_id))
        batch = fc.read_batch(self._conn, catalog.ids, self._cursors, self._start_ms, max_samples)
        chunks = [(c.series_id, catalog.labels(c.series_id), c.ts, c.values) for c in batch.chunks]
        return _Part(chunks), batch.full

    def _dropped(self) -> tuple[int, int]:
        assert self._conn is not None
        return fc.dropped_counts(self._conn, fc.TARGET)

    def _report_dropped(self, dropped: int, reported: int) -> None:
        new = dropped - max(reported, self._dropped_seen)
        if new <= 0:
            return
        self._dropped_seen = dropped
        self.stats.samples_dropped += new
        log.warning("remote_write samples dropped by retention before sending samples=%d", new)
        self.emit(
            Event(
                ts_ms=now_ms(),
                kind="remote_write.dropped",
                subject="remote_write",
                message=f"{new} samples were removed by retention before they could be sent",
                data={"samples": new, "url": self.stats.url},
            )
        )
        self.writer.run_task(lambda conn: fc.mark_reported(conn, fc.TARGET, dropped))

    # --- sending -------------------------------------------------------------------------

    async def _send(self, cfg: RemoteWriteConfig, part: _Part, budget: list[int]) -> None:
        """Send ``part``; split it when the receiver refuses its content.

        Raises:
            _Retry: the receiver is down, busy or refusing every request.
        """
        body = await asyncio.to_thread(wire.encode, ((c[1], c[2], c[3]) for c in part.chunks))
        budget[0] -= 1
        status, error = await self._post(cfg, body)
        if 200 <= status < 300:
            self._sent(part)
            return
        if status not in SPLIT_STATUSES:
            reason = "5xx" if status >= 500 else "429" if status == 429 else "4xx"
            if status >= 500 or status in RETRY_4XX:
                raise _Retry(reason, f"HTTP {status}: {error}")
            raise _Retry(reason, f"HTTP {status} (the receiver refuses every request?): {error}")
        self.stats.failed("4xx", f"HTTP {status}: {error}", now_ms())
        if part.samples > 1 and budget[0] > 1:
            left, right = part.halves()
            await self._send(cfg, left, budget)
            await self._send(cfg, right, budget)
            return
        self._rejected(part, status, error)

    async def _post(self, cfg: RemoteWriteConfig, body: bytes) -> tuple[int, str]:
        """POST one body: the answer's status and (for an error) its text.

        Raises:
            _Retry: no connection or no answer in time.
        """
        if self._client is None or self._client.closed:
            ssl_context = None
            if cfg.ca_file is not None:
                from storage.tlstrust import client_context

                ssl_context = client_context(cfg.ca_file)
            self._client = HttpClient(user_agent="vigil-remote-write/1", ssl_context=ssl_context)
        headers = dict(wire.HEADERS)
        if cfg.bearer_token is not None:
            headers["Authorization"] = f"Bearer {cfg.bearer_token}"
        elif cfg.username is not None and cfg.password is not None:
            import base64

            pair = base64.b64encode(f"{cfg.username}:{cfg.password}".encode()).decode()
            headers["Authorization"] = f"Basic {pair}"
        self.stats.requests += 1
        try:
            async with self._client.post(
                cfg.url,
                data=body,
                headers=headers,
                timeout_s=cfg.timeout_s,
                follow_redirects=False,
            ) as resp:
                status = resp.status
                text = "" if 200 <= status < 300 else await resp.text(limit=4096)
                if 200 <= status < 300:
                    await resp.drain(64 * 1024, within_s=cfg.timeout_s)
        except TimeoutError:
            raise _Retry("timeout", f"no answer in {cfg.timeout_s:g}s") from None
        except InvalidURL:
            raise _Retry("connect", "invalid URL") from None
        except (WireError, OSError) as exc:
            raise _Retry("connect", str(getattr(exc, "reason", None) or exc)) from None
        return status, " ".join(text.split())[:ERROR_TEXT]

    def _advance(self, part: _Part) -> None:
        assert self._cursors is not None
        ends = part.ends()
        for sid, ts in ends.items():
            if ts > self._cursors.get(sid, self._start_ms):
                self._cursors[sid] = ts
        self.writer.run_task(lambda conn: fc.advance(conn, fc.TARGET, ends))

    def _sent(self, part: _Part) -> None:
        self._advance(part)
        self.stats.samples_sent += part.samples
        self.stats.last_success_ms = now_ms()

    def _rejected(self, part: _Part, status: int, error: str) -> None:
        """Skip what the receiver refused: the cursors move past it."""
        self._advance(part)
        n = part.samples
        self.stats.samples_rejected += n
        r = self._rejections
        r.samples += n
        r.status, r.error = status, error
        log.warning(
            "remote_write samples refused by the receiver and skipped samples=%d status=%d "
            "error=%r",
            n,
            status,
            error,
        )
        self._flush_rejections(force=False)

    def _flush_rejections(self, *, force: bool) -> None:
        r = self._rejections
        now = now_ms()
        if not r.samples or (not force and now - r.last_event_ms < REJECTED_EVENT_EVERY_MS):
            return
        self.emit(
            Event(
                ts_ms=now,
                kind="remote_write.rejected",
                subject="remote_write",
                message=f"the receiver refused {r.samples} samples (HTTP {r.status}); skipped",
                data={"samples": r.samples, "status": r.status, "error": r.error},
            )
        )
        r.samples, r.last_event_ms = 0, now

    def _failing(self, exc: _Retry) -> None:
        now = now_ms()
        self.stats.failed(exc.reason, exc.error, now)
        if self.stats.state == ForwardState.RETRYING:
            log.debug("remote_write retrying error=%r", exc.error)
            return
        self.stats.state = ForwardState.RETRYING
        self._failing_since_ms = now
        log.warning("remote_write failing url=%s error=%r", self.stats.url, exc.error)
        self.emit(
            Event(
                ts_ms=now,
                kind="remote_write.failing",
                subject="remote_write",
                message=f"remote_write to {self.stats.url} failing: {exc.error}",
                data={"url": self.stats.url, "reason": exc.reason, "error": exc.error},
            )
        )

    def _recovered(self) -> None:
        if self.stats.state != ForwardState.RETRYING:
            return
        now = now_ms()
        down_ms = now - (self._failing_since_ms or now)
        self.stats.state = ForwardState.CATCHING_UP
        log.info("remote_write recovered url=%s down_s=%.1f", self.stats.url, down_ms / 1000)
        self.emit(
            Event(
                ts_ms=now,
                kind="remote_write.recovered",
                subject="remote_write",
                message=f"remote_write to {self.stats.url} accepted again after "
                f"{down_ms / 1000:.0f}s; replaying what was stored meanwhile",
                data={"url": self.stats.url, "down_ms": down_ms},
            )
        )
