"""Unit tests for agent.deploy.store: deploy records written by a real writer thread and read on
a read-only connection, with refusals passed through and a stopped writer a clear error."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.deploy.store import DeployStore, StorageUnavailable
from storage import deployments as deps
from storage import versions as vers
from storage.deployments import DeployInFlight, Deployment, DeployStateChanged
from storage.records import ArtifactKind, DeployKind, DeployState, DeployStrategy
from storage.versions import Version
from storage.writer import Writer

T0 = 1_700_000_000_000


@pytest.fixture
def writer(tmp_path: Path) -> Iterator[Writer]:
    w = Writer(tmp_path / "vigil.db", flush_interval_s=0.01)
    w.start()
    yield w
    w.close()


def request(model: str = "m") -> Deployment:
    return Deployment(
        id=0,
        model=model,
        kind=DeployKind.ARTIFACT,
        strategy=DeployStrategy.IN_PLACE,
        state=DeployState.REQUESTED,
        requested_by="alice",
        requested_ms=T0,
        state_since_ms=T0,
    )


async def test_write_commits_before_returning_and_read_sees_it(writer: Writer) -> None:
    store = DeployStore(writer, writer.path)
    v = Version(0, "m", "sha256:" + "a" * 64, "/m/v1", ArtifactKind.FILE, 5, 1, T0, T0)
    stored, created = await store.write(lambda c: vers.register_version(c, v))
    assert created and stored.id > 0
    dep = await store.write(lambda c: deps.insert_deployment(c, request()))
    assert await store.read(lambda c: deps.active_deployment(c, "m")) == dep
    assert [d.id for d in await store.read(deps.in_flight)] == [dep.id]


async def test_refusals_pass_through_as_they_are(writer: Writer) -> None:
    store = DeployStore(writer, writer.path)
    first = await store.write(lambda c: deps.insert_deployment(c, request()))
    with pytest.raises(DeployInFlight) as caught:
        await store.write(lambda c: deps.insert_deployment(c, request()))
    assert caught.value.deployment == first
    moved = first.moved(DeployState.SWITCHING, T0 + 1)
    await store.write(
        lambda c: deps.update_deployment(c, moved, expect_state=DeployState.REQUESTED)
    )
    with pytest.raises(DeployStateChanged):
        await store.write(
            lambda c: deps.update_deployment(c, moved, expect_state=DeployState.REQUESTED)
        )
    # The writer is still healthy and serving after the refusals.
    assert await store.read(lambda c: deps.get_deployment(c, first.id)) == moved


async def test_a_stopped_writer_is_storage_unavailable(tmp_path: Path) -> None:
    w = Writer(tmp_path / "vigil.db", flush_interval_s=0.01)
    w.start()
    w.close()
    store = DeployStore(w, w.path, timeout_s=0.2)
    with pytest.raises(StorageUnavailable, match=r"did not answer in 0\.2s"):
        await store.write(lambda c: deps.insert_deployment(c, request()))
    # Reads need no writer.
    assert await store.read(lambda c: deps.active_deployment(c, "m")) is None
    missing = DeployStore(w, tmp_path / "none" / "vigil.db")
    with pytest.raises(StorageUnavailable, match="storage failed"):
        await missing.read(deps.in_flight)
