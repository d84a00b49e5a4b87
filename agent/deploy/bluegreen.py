"""The ``blue-green`` strategy: the new version beside the old one, gated there, then the switch.

The model's process runs as one copy per slot (:mod:`agent.deploy.slots`): the serving copy is
the supervised process; a deploy starts the new version as a second copy on the spare port,
beside it, and the state machine's steps (:class:`~agent.deploy.strategy.Strategy`) are:

1. **switch** (state ``switching``): start the new copy on the spare port, with the new
   version, as the supervisor starts its children (its own session, the agent's environment
   less its secrets, output into the process's log). It is the deploy's, not the
   supervisor's: it opens no process incident and pages nobody; its failing is the deploy's
   failing. Its pid and start time are stored at once.
2. **confirm** (``starting``): wait until it answers the model's canary (not recorded against
   the model: loading is no fault), then send the model's canaries to it: the bake judges the
   new copy directly, on its own port, while the old copy keeps serving all the traffic.
3. the **bake** (``baking``) is the same canary gate as in-place.
4. **cut over** (``promoting``): switch the front proxy to the new copy, confirmed
   (:class:`~agent.deploy.proxy.TrafficSwitch`). There is no bake after the switch: the point
   of blue-green is to know before users see the new version, and the switch's own
   confirmation says the new copy takes the traffic. A switch that fails with the proxy
   ``restored`` left the traffic where it was; one that fails otherwise left it unknown, and
   the rollback switches back.
5. **finish** (``promoted``): store the new copy as the serving slot (first, so an agent killed
   now knows), point ``current`` at the new version, hand supervision over to the new copy (a
   new state machine adopts it), wait until the proxy holds no connection to the old copy
   (``drain_timeout`` at most), then stop the old copy.

**Roll back**, before the switch: the old copy is untouched and keeps serving; the canaries go
back to it and the new copy is stopped. After a switch that did not hold: switch the proxy back
to the old copy (if it runs; otherwise the new copy keeps serving and the deploy ends failed),
then stop the new copy. The new copy is stopped only once the proxy is known to point away
from it: the proxy never points at a stopped copy.

**An agent killed mid-way**: killed while the new copy was being started (``switching``), the
deploy is cancelled and the new copy stopped; killed before the new copy answered, rolled back;
killed during the bake with the new copy still running, the bake resumes (its canaries keep
going to the new copy: :meth:`~agent.deploy.copies.BlueGreenCopies.load`); killed while
promoting, the promotion is finished (each step checks whether it was done). At every start,
a proxy left on the other slot with no deploy in flight is switched back to the serving copy.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from agent.config import ProcessConfig
from agent.deploy.copies import BlueGreenCopies, alive, identity_of
from agent.deploy.errors import DeployError
from agent.deploy.link import LinkError, read_link, switch_link
from agent.deploy.proxy import InvalidTarget, SwitchError
from agent.deploy.restart import StartResult, process_identity, same_process, settled
from agent.deploy.slots import Slot, copy_address, copy_config, spare_port
from agent.deploy.strategy import InPlace, Journal, Rollout, Strategy, same_path
from agent.supervise.adoption import ProcessRecord
from agent.supervise.supervisor import ActionError, ManagedProcess
from agent.supervise.targets import LaunchError
from agent.supervise.tree import Handle, port_free
from agent.supervise.tree import process_create_time as created
from probes.base import now_ms
from storage.records import ProcessState
from storage.text import printable

log = logging.getLogger("vigil.deploy")

__all__ = ["BlueGreen"]

SETTLE_MARGIN_S = 5.0


class BlueGreen(Strategy):
    """See the module docstring."""

    name = "blue-green"

    def __init__(self, copies: BlueGreenCopies) -> None:
        self.copies = copies
        self.supervisor = copies.host.supervisor
        self.inplace = InPlace(self.supervisor)
        self.handle: Handle | None = None
        """The new copy, when this agent started or found it."""

    # --- what the journal knows ---------------------------------------------------------

    @property
    def _journal(self) -> Journal:
        assert self.journal is not None, "a strategy runs attached to its runner"
        return self.journal

    def _serving(self, ro: Rollout) -> Slot:
        stored = Slot.from_json(self._journal.checks.get("serving"))
        return stored if stored is not None else self.copies.routes.slot(ro.model)

    def _candidate(self) -> Slot | None:
        return Slot.from_json(self._journal.checks.get("candidate"))

    def _template(self, ro: Rollout) -> ProcessConfig:
        return self.copies.template(ro.process)

    def _address(self, ro: Rollout, slot: Slot) -> str:
        return copy_address(ro.model, slot.port)

    # --- before anything changes ----------------------------------------------------------

    def prepare(self, ro: Rollout) -> None:
        self.inplace.prepare(ro)

    async def preflight(self, ro: Rollout) -> None:
        m = ro.model
        mp = self.supervisor.processes.get(ro.process)
        if mp is None or mp.state != ProcessState.RUNNING:
            state = "not running" if mp is None else str(mp.state)
            raise DeployError(
                f"process {ro.process!r} is {state}: a blue-green deploy keeps the old copy "
                "serving while the new one starts and bakes, so the old copy must be running",
                409,
            )
        serving = self.copies.routes.slot(m)
        spare = spare_port(m, serving.port)
        if not await asyncio.to_thread(port_free, spare):
            raise DeployError(
                f"the spare port {spare} of model {m.name!r} is in use by another process: "
                "the new copy would not be able to listen there (stop what listens on it)",
                409,
            )
        switch = self.copies.switch_for(m)
        checked = await switch.preflight(m.name)
        if not checked.ok:
            raise DeployError(
                f"the {switch.kind} traffic switch of model {m.name!r} is not ready: "
                + "; ".join(checked.problems()),
                409,
            )
        want = self._address(ro, serving)
        current = await self.copies.current(m)
        if current is not None and current != want:
            raise DeployError(
                f"{switch.kind} sends model {m.name!r}'s traffic to {current}, but its serving "
                f"copy listens on {want}: point the proxy at {want} first",
                409,
            )

    # --- the new copy ------------------------------------------------------------------------

    def started_message(self, ro: Rollout, target: Path) -> str:
        cand = self._candidate()
        port = cand.port if cand is not None else "?"
        return (
            f"started the new copy of {ro.process} on port {port} with {target}; the old copy "
            f"serves on port {self._serving(ro).port}"
        )

    async def switch(self, ro: Rollout, target: Path) -> Path | None:
        m = ro.model
        serving = self.copies.routes.slot(m)
        cand = Slot(spare_port(m, serving.port), str(target))
        cfg = copy_config(self._template(ro), cand)
        old = self.copies.serving_identity(ro.process)
        await self._journal.note(
            "launching",
            evidence={"serving": serving.to_json(), "candidate": cand.to_json(), "old_copy": old},
            addresses={"old": self._address(ro, serving), "new": self._address(ro, cand)},
        )
        self.copies.plog(ro.process).append(
            f"vigil: {ro.reason}: starting the new copy on port {cand.port} with {target}"
        )
        try:
            handle = await self.copies.launch(cfg)
        except LaunchError as exc:
            raise DeployError(f"the new copy could not start: {exc}") from None
        self.handle = handle
        await self._journal.note(
            "launched", evidence={"candidate": {**cand.to_json(), **identity_of(handle)}}
        )
        try:
            return await asyncio.to_thread(read_link, ro.link)
        except LinkError:
            # The deploy fails as not switched: nothing of it may keep running.
            await self._stop_new(ro)
            raise

    async def _new_copy(self, ro: Rollout) -> Handle | None:
        """The new copy if it runs: the one this agent started, or found by its identity."""
        if self.handle is not None and not self.handle.exited.done():
            return self.handle
        cand = self._candidate()
        if cand is None:
            return None
        self.handle = await self.copies.find(
            copy_config(self._template(ro), cand), self._journal.checks.get("candidate")
        )
        return self.handle

    async def confirm(self, ro: Rollout) -> StartResult:
        cand = self._candidate()
        handle = await self._new_copy(ro)
        if cand is None or handle is None:
            return StartResult(False, now_ms(), "the new copy is not running")
        timeout_s = self._template(ro).startup_timeout_s
        ready = await self.copies.ready(ro.model, cand.port, handle, timeout_s)
        if not ready.ok:
            return ready
        address = self._address(ro, cand)
        await self._journal.note("probing", addresses={"probing": address})
        self.copies.retarget(ro.model, cand.port)
        return StartResult(
            True,
            now_ms(),
            f"the new copy (pid {handle.pid}) answers on {address}; the canaries go to it",
            identity_of(handle),
        )

    def serving(self, ro: Rollout, target: Path, replaced: Mapping[str, Any] | None) -> bool:
        """The new version serves (for a resuming agent) when its copy still runs and had
        answered (its canaries went to it); a rollback is always done again (each of its
        steps checks whether it was done)."""
        checks = self._journal.checks
        if not same_path(target, Path(str(checks.get("target", "")))):
            return False
        return "probing" in self._journal.addresses and alive(checks.get("candidate"))

    def incarnation(self, ro: Rollout) -> dict[str, Any] | None:
        return self.inplace.incarnation(ro)

    # --- the switch --------------------------------------------------------------------------

    async def cut_over(self, ro: Rollout) -> StartResult:
        m = ro.model
        cand = self._candidate()
        if cand is None:
            return StartResult(False, now_ms(), "no new copy was started")
        address = self._address(ro, cand)
        if not await self._new_copy_runs(ro, cand):
            return StartResult(
                False, now_ms(), f"the new copy on {address} is not running any more"
            )
        switch = self.copies.switch_for(m)
        if self._journal.addresses.get("traffic") == address:
            # Confirmed before an agent restart. (The proxy's own file is no proof: an agent
            # killed between writing nginx's include and reloading it leaves the include
            # saying the new address while nginx still runs the old config.)
            return StartResult(True, now_ms(), f"{switch.kind} sends the traffic to {address}")
        await self._journal.note("switching traffic", addresses={"switching_to": address})
        try:
            result = await switch.switch(m.name, address)
        except SwitchError as exc:
            where = (
                "the proxy is as it was: the traffic stays on the old copy"
                if exc.restored
                else "where the traffic goes is unknown: switching back to the old copy"
            )
            await self._journal.note(
                "switch failed",
                # Restored: the proxy is as before the attempt, nothing to switch back.
                addresses={"switching_to": "" if exc.restored else address},
                evidence={
                    "switch_error": {
                        "stage": str(exc.stage),
                        "restored": exc.restored,
                        "message": printable(str(exc), keep_newlines=True),
                    }
                },
            )
            return StartResult(False, now_ms(), f"{exc} ({where})")
        except InvalidTarget as exc:
            return StartResult(False, now_ms(), f"{exc} (nothing was switched)")
        await self._journal.note(
            "traffic switched",
            evidence={"switch": dataclasses.asdict(result)},
            addresses={"traffic": address},
        )
        if not await self._new_copy_runs(ro, cand):
            return StartResult(False, now_ms(), f"the new copy on {address} exited at the switch")
        return StartResult(
            True,
            now_ms(),
            f"{switch.kind} sends the traffic to {address} in {result.total_ms:.0f} ms "
            f"({result.confirmed_by})",
        )

    async def _new_copy_runs(self, ro: Rollout, cand: Slot) -> bool:
        handle = await self._new_copy(ro)
        if handle is not None:
            return True
        # An agent restart after the hand-over was stored: the supervisor runs it now.
        mp = self.supervisor.processes.get(ro.process)
        return (
            mp is not None
            and mp.state == ProcessState.RUNNING
            and mp.config == copy_config(self._template(ro), cand)
        )

    # --- promoted: hand over, drain, stop the old copy ----------------------------------------

    async def finish(self, ro: Rollout) -> dict[str, object]:
        m = ro.model
        cand = self._candidate()
        assert cand is not None and m.deploy is not None
        template = self._template(ro)
        new_cfg = copy_config(template, cand)
        old_slot = self._serving(ro)
        if old_slot == cand:  # the hand-over was stored by an agent killed after it
            stored = Slot.from_json(self._journal.checks.get("old"))
            old_slot = stored if stored is not None else old_slot
        mp = self.supervisor.processes.get(ro.process)
        handed = mp is not None and mp.config == new_cfg
        old_ident = self._journal.checks.get("old_copy")
        if not handed and mp is not None and process_identity(mp) is not None:
            old_ident = process_identity(mp)
        new_address = self._address(ro, cand)
        old_address = self._address(ro, old_slot)
        # First stored, so an agent killed from here on knows which copy serves.
        await self._journal.note(
            "handing over",
            evidence={"serving": cand.to_json(), "old": old_slot.to_json(), "old_copy": old_ident},
            addresses={"serving": new_address, "old": old_address},
        )
        self.copies.routes.serving[m.name] = cand
        out: dict[str, object] = {"serving": new_address}
        try:
            await asyncio.to_thread(switch_link, ro.link, Path(cand.artifact))
        except LinkError as exc:
            out["link_error"] = str(exc)
        old_mp: ManagedProcess | None = None
        if not handed:
            old_mp = await self._hand_over(ro, new_cfg)
        self.copies.retarget(m, None)
        await self._journal.note("draining", addresses={"draining": old_address})
        drained = await self.copies.switch_for(m).drain(old_address, m.deploy.drain_timeout_s)
        out["drain"] = dataclasses.asdict(drained)
        out["old_copy"] = await self._stop_old(ro, old_mp, old_slot, old_ident)
        await self._journal.note("done")
        return out

    async def _hand_over(self, ro: Rollout, new_cfg: ProcessConfig) -> ManagedProcess | None:
        handle = await self._new_copy(ro)
        ident = identity_of(handle) if handle is not None else {}
        record = ProcessRecord(
            pid=int(ident.get("pid") or 0),
            create_time=ident.get("create_time"),
            argv=new_cfg.command,
            restarts=0,
            saved_ms=now_ms(),
        )
        timeout_s = new_cfg.startup_timeout_s + SETTLE_MARGIN_S
        try:
            return await self.supervisor.hand_over(new_cfg, record, ro.reason, timeout_s)
        except ActionError as exc:
            log.error("hand-over did not complete model=%s error=%s", ro.model.name, exc)
            return None

    async def _stop_old(
        self,
        ro: Rollout,
        old_mp: ManagedProcess | None,
        old_slot: Slot,
        old_ident: Mapping[str, Any] | None,
    ) -> str:
        if old_mp is not None:
            pid = old_mp.pid
            await old_mp.stop(by=ro.reason)
            return f"pid {pid} stopped" if pid is not None else "not running"
        serving = self.copies.serving_identity(ro.process)
        if not old_ident or same_process(old_ident, serving):
            return "not running"
        cfg = copy_config(self._template(ro), old_slot)
        handle = await self.copies.find(cfg, old_ident)
        if handle is None:
            return "not running"
        await self.copies.stop(cfg, handle)
        return f"pid {handle.pid} stopped"

    # --- roll back ---------------------------------------------------------------------------

    async def rollback(self, ro: Rollout, target: Path) -> StartResult:
        m = ro.model
        serving = self._serving(ro)
        old_address = self._address(ro, serving)
        await self._journal.note("rolling back")
        template = self._template(ro)
        mp = await settled(
            self.supervisor, ro.process, template.startup_timeout_s + SETTLE_MARGIN_S
        )
        old_runs = mp is not None and mp.state == ProcessState.RUNNING
        current = await self.copies.current(m)
        # A switch to the new copy begun and not known to be undone: where the traffic goes is
        # unknown (an agent killed mid-switch), so the old address is switched to again.
        begun = bool(self._journal.addresses.get("switching_to"))
        if begun or (current is not None and current != old_address):
            if not old_runs:
                return StartResult(
                    False,
                    now_ms(),
                    f"the old copy is not running ({mp.state if mp else 'gone'}): the traffic "
                    f"stays on {current or 'the new copy'}, the new copy keeps running",
                )
            try:
                await self.copies.switch_for(m).switch(m.name, old_address)
            except (SwitchError, InvalidTarget) as exc:
                return StartResult(
                    False,
                    now_ms(),
                    f"could not switch the traffic back to {old_address}: {exc}; the new copy "
                    "keeps running",
                )
            await self._journal.note(
                "switched back", addresses={"traffic": old_address, "switching_to": ""}
            )
        self.copies.retarget(m, None)
        stopped = await self._stop_new(ro)
        await self._journal.note("rolled back", evidence={"new_copy": stopped})
        if not old_runs:
            state = mp.state if mp is not None else "gone"
            return StartResult(False, now_ms(), f"the old copy is not running ({state})")
        assert mp is not None
        return StartResult(
            True,
            now_ms(),
            f"the old copy serves on {old_address}; the new copy: {stopped}",
            process_identity(mp),
        )

    async def shutdown(self, ro: Rollout) -> None:
        if self.journal is None or self._candidate() is None:
            return
        log.info("stopping the new copy with the agent model=%s", ro.model.name)
        await self._stop_new(ro)

    async def abandon(self, ro: Rollout) -> None:
        self.copies.retarget(ro.model, None)
        stopped = await self._stop_new(ro)
        await self._journal.note("abandoned", evidence={"new_copy": stopped})

    async def _stop_new(self, ro: Rollout) -> str:
        """Stop the new copy (found by its identity, or, started in the instant before that
        was stored, by its command line): the proxy points away from it by now."""
        cand = self._candidate()
        if cand is None:
            return "never started"
        cfg = copy_config(self._template(ro), cand)
        done: list[str] = []
        handle = await self._new_copy(ro)
        if handle is not None:
            await self.copies.stop(cfg, handle)
            done.append(f"pid {handle.pid} stopped")
        serving = self.copies.serving_identity(ro.process)
        keep = {int(serving["pid"])} if serving and serving.get("pid") else set()
        for pid in await asyncio.to_thread(self.copies.strays, cfg, keep):
            found = await self.copies.find(cfg, {"pid": pid, "create_time": created(pid)})
            if found is not None:
                await self.copies.stop(cfg, found)
                done.append(f"pid {pid} stopped")
        self.handle = None
        return ", ".join(done) or "not running"
