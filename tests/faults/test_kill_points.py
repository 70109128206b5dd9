"""The bot SIGKILLed at each step of deploy, upgrade, backup and restore (the fault
points of bot/faults.py), then started again: the job's thread is told what became of
it, and the app and the restic repository are in the state the message states.

Real Synapse, the real test swarm and real restic; the bot is its own process.
"""

from __future__ import annotations

import pytest

from tests.faults.site import FaultSite, deploy_by_hand, new_app, wait_running

# Before `docker stack deploy` nothing exists; after it swarm converges by itself and
# the restarted bot waits for that, as the job would have.
DEPLOY_POINTS = {
    "deploy.preflight_done": False,
    "deploy.overlay_written": False,
    "deploy.stack_deployed": True,
    "deploy.converging": True,
}


@pytest.mark.parametrize("point", list(DEPLOY_POINTS))
async def test_a_first_deploy_killed_at_each_step(site: FaultSite, point: str) -> None:
    domain = new_app(site.abra, "deploy")
    await site.start()
    site.arm(point)
    command = f"!deploy {domain} 1.0.0+1.0"
    thread = await site.progress_thread(await site.send(command))
    await site.killed()

    await site.start()
    if DEPLOY_POINTS[point]:
        told = await site.recovery(thread, f"{domain} converged and runs 1.0.0+1.0 (app 1/1)")
        (service,) = await site.services(domain)
        assert service.replicas_running == 1
    else:
        told = await site.recovery(thread, f"Now: {domain} is not deployed; nothing of this")
        assert await site.services(domain) == []
    assert f"(`{command}`) was interrupted" in told, told
    assert f"send `{command}` again" in told, told


@pytest.mark.parametrize("point", ["upgrade.backed_up", "deploy.converging"])
async def test_an_upgrade_killed_after_its_backup_or_while_converging(
    site: FaultSite, point: str
) -> None:
    domain = new_app(site.abra, "upgrade")
    deploy_by_hand(site.dockerd, site.tmp, domain, "1.0.0+1.0")
    await wait_running(site, domain)
    await site.start()
    site.arm(point)
    thread = await site.voted(f"!upgrade {domain}")
    await site.killed()

    await site.start()
    runs = "1.0.0+1.0" if point == "upgrade.backed_up" else "1.1.0+1.0"
    told = await site.recovery(thread, f"{domain} converged and runs {runs}")
    assert f"`!snapshots {domain}`" in told, told
    (snap,) = await site.snapshots()  # the backup first was made before the kill
    assert f"app={domain}" in snap.tags
    if point == "deploy.converging":
        # Written as the finished job would have: the history row and the .env pin.
        assert f"{domain}'s .env pins 1.1.0+1.0" in told, told
        (row,) = site.deploys(domain)
        assert (row["version"], row["previous_version"], row["result"]) == (
            "1.1.0+1.0",
            "1.0.0+1.0",
            "ok",
        )
        assert row["job_id"] is not None
        assert site.pinned(domain) == "TYPE=demo:1.1.0+1.0"
    else:  # killed before `docker stack deploy`: no deploy happened, none is recorded
        assert "deploy history" not in told, told
        assert site.deploys(domain) == []
        assert site.pinned(domain) == "TYPE=demo"


@pytest.mark.parametrize(
    "point", ["backup.pre_hooks_done", "backup.restic_running", "backup.restic_done"]
)
async def test_a_backup_killed_at_each_step(site: FaultSite, point: str) -> None:
    domain = new_app(site.abra, "backup")
    deploy_by_hand(site.dockerd, site.tmp, domain, "1.0.0+1.0")
    await wait_running(site, domain)
    (site.volume(domain) / "a.txt").write_text("alpha\n")
    await site.start()
    site.arm(point)
    thread = await site.progress_thread(await site.send(f"!backup {domain}"))
    await site.killed()

    await site.start()
    told = await site.recovery(thread, "post-hook did not run")
    # The post-hook never ran: the pre-hook's mark is alone in the volume.
    assert (site.volume(domain) / "hooks.log").read_text() == "pre\n"
    snaps = await site.snapshots()
    if snaps:
        (snap,) = snaps
        assert f"snapshot `{snap.short_id}` of {domain} was made by this job" in told, told
    else:
        assert f"no snapshot of {domain} was made by this job" in told, told
    locks = await site.repo.locks() if snaps or point != "backup.pre_hooks_done" else []
    if locks:
        for lock in locks:
            assert f"restic lock `{lock['id'][:8]}`" in told, told
            assert "is left in place" in told, told
            assert "`restic unlock`" in told, told
    else:
        assert "The repository holds no lock." in told, told
    if point == "backup.restic_done":
        assert snaps, "restic had finished: its snapshot is in the repository"


RESTORE_POINTS = [
    "restore.scaled_down",
    "restore.staged",
    "restore.swapped",
    "restore.before_scale_up",
]


@pytest.mark.parametrize("point", RESTORE_POINTS)
async def test_a_restore_killed_at_each_step(site: FaultSite, point: str) -> None:
    domain = new_app(site.abra, "restore")
    deploy_by_hand(site.dockerd, site.tmp, domain, "1.0.0+1.0")
    await wait_running(site, domain)
    data = site.volume(domain)
    (data / "a.txt").write_text("alpha\n")
    await site.start()
    await site.send(f"!backup {domain}")
    await site.said("snapshot `")
    (snap,) = await site.snapshots()
    (data / "a.txt").write_text("damaged\n")

    site.arm(point)
    thread = await site.voted(f"!restore {domain}")
    await site.killed()
    (service,) = await site.services(domain)
    assert service.replicas_desired == 0  # the kill left it stopped

    await site.start()
    told = await site.recovery(thread, f"The bot scaled {domain} back to app=1: it runs again")
    swapped = point in ("restore.swapped", "restore.before_scale_up")
    if swapped:
        assert f"on the data of snapshot `{snap.short_id}`" in told, told
        assert (data / "a.txt").read_text() == "alpha\n"
        kept = _path_after(told, "the data it replaced is kept at `")
        assert _read(kept + "/_data/a.txt") == "damaged\n"
    else:
        assert "on its own data, untouched" in told, told
        assert (data / "a.txt").read_text() == "damaged\n"
    if point == "restore.staged":
        copy = _path_after(told, "a restored copy that was not swapped in is at `")
        assert _read(copy + str(data / "a.txt")) == "alpha\n"
    (service,) = await site.services(domain)
    assert service.replicas_desired == 1
    await wait_running(site, domain)


def _path_after(text: str, marker: str) -> str:
    assert marker in text, text
    return text.split(marker, 1)[1].split("`", 1)[0]


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()
