"""A dockerd event makes pynet look at that event's container only (issue 21, names within
200 ms of `docker run` also in a burst): one inspect per container named, not a list and
inspect of every container; the full list stays the safety net (at start, every
look_interval, after a lost event stream or a failure)."""
from __future__ import annotations

import threading
import time

import docker
import pytest

from driver.names import docker_names
from driver.names.docker_names import DockerNames, event_target, summary_of
from driver.names.service import Names
from pynet_core.errors import BackendUnavailable
from pynet_core.store import keys
from pynet_core.store.memory import MemoryStore
from tests.unit.test_dns_names import OVER_NID, Records, container, ep, on, overlay_net

CID, EID = "c1" * 32, "e1" * 32
CID2, EID2 = "c2" * 32, "e2" * 32


def inspected(cid: str, name: str, eid: str, ip: str, running: bool = True, aliases=None) -> dict:
    """A container's inspect answer, as dockerd gives it."""
    return {"Id": cid, "Name": f"/{name}", "State": {"Running": running},
            "NetworkSettings": {"Networks": {"appnet": on(OVER_NID, eid, ip, aliases=aliases)}}}


# --- which container an event names -----------------------------------------------------
@pytest.mark.parametrize("event, target", [
    ({"Type": "container", "Action": "start", "Actor": {"ID": CID}}, CID),
    ({"Type": "container", "Action": "die", "id": CID}, CID),  # older engines: "id" too
    ({"Type": "container", "Action": "destroy", "Actor": {"ID": CID}}, CID),
    ({"Type": "container", "Action": "rename", "Actor": {"ID": CID}}, CID),
    ({"Type": "container", "Action": "create", "Actor": {"ID": CID}}, False),  # start follows
    ({"Type": "network", "Action": "connect", "Actor": {"ID": "n" * 64,
                                                        "Attributes": {"container": CID}}}, CID),
    ({"Type": "network", "Action": "disconnect", "Actor": {"ID": "n" * 64,
                                                           "Attributes": {"container": CID}}}, CID),
    ({"Type": "network", "Action": "create", "Actor": {"ID": "n" * 64}}, None),  # read everything
    ({"Type": "network", "Action": "destroy", "Actor": {"ID": "n" * 64}}, None),
    ({"Type": "container", "Action": "start", "Actor": {"ID": 7}}, None),  # no shape known
    ("junk", None),
])
def test_an_event_names_its_container_or_asks_for_a_full_look(event, target):
    assert event_target(event) == target


def test_an_inspect_answer_is_shaped_as_the_list_gives_it_and_only_a_running_container_counts():
    shaped = summary_of(inspected(CID, "web", EID, "10.77.0.2", aliases=["api"]))
    assert shaped == {"Id": CID, "Names": ["/web"], "NetworkSettings": {"Networks": {
        "appnet": on(OVER_NID, EID, "10.77.0.2", aliases=["api"])}}}
    assert summary_of(inspected(CID, "web", EID, "10.77.0.2", running=False)) is None
    assert summary_of({"Id": CID}) is None and summary_of(None) is None


# --- DockerNames.read_containers against a fake docker API --------------------------------
def test_read_containers_inspects_only_the_containers_named(monkeypatch):
    calls: list[str] = []

    class FakeAPI:
        def __init__(self, **kwargs):
            pass

        def containers(self):
            calls.append("list")
            return [container(CID, "web", appnet=on(OVER_NID, EID, "10.77.0.2"))]

        def inspect_container(self, cid):
            calls.append(cid)
            if cid == "gone":
                raise docker.errors.NotFound("gone")
            if cid == CID2:
                return inspected(CID2, "old", EID2, "10.77.0.3", running=False)
            return inspected(CID, "web", EID, "10.77.0.2", aliases=["api"])

        def inspect_network(self, name):
            calls.append(name)
            return {"Options": {"com.docker.network.bridge.name": "gwb0"},
                    "Containers": {CID: {"IPv4Address": "172.18.0.2/16"}}}

    monkeypatch.setattr(docker_names.docker, "APIClient", FakeAPI)
    source = DockerNames("unix:///fake.sock")
    found, gateways = source.read_containers([CID, CID2, "gone"])
    assert found[CID]["NetworkSettings"]["Networks"]["appnet"]["Aliases"] == ["api"]
    assert found[CID2] is None and found["gone"] is None
    assert gateways == {CID: ["172.18.0.2"]} and source.gwbridge == "gwb0"
    assert calls == [CID, CID2, "gone", "docker_gwbridge"]  # no list
    # The next full look needs no inspect of it: the event's inspect is remembered.
    calls.clear()
    containers, _ = source.read()
    assert containers[0]["NetworkSettings"]["Networks"]["appnet"]["Aliases"] == ["api"]
    assert calls == ["list", "docker_gwbridge"]


def test_read_containers_says_none_when_dockerd_does_not_answer(monkeypatch):
    class DownAPI:
        def __init__(self, **kwargs):
            pass

        def inspect_container(self, cid):
            raise docker.errors.APIError("dockerd went away")

    monkeypatch.setattr(docker_names.docker, "APIClient", DownAPI)
    assert DockerNames("unix:///fake.sock").read_containers([CID]) is None


# --- Names: the event path and the safety net ----------------------------------------------
class CountingDocker:
    """dockerd as the names see it: `running` (cid -> inspect answer); counts lists and
    inspects; `fail` makes it not answer."""

    def __init__(self) -> None:
        self.running: dict[str, dict] = {}
        self.lists = 0
        self.inspects: list[str] = []
        self.fail = False

    def read(self):
        if self.fail:
            return None
        self.lists += 1
        return [summary_of(info) for info in self.running.values()], {}

    def read_containers(self, cids):
        if self.fail:
            return None
        self.inspects.extend(cids)
        return {cid: summary_of(self.running[cid]) if cid in self.running else None
                for cid in cids}, {}

    def follow(self, stop, changed):
        self.changed = changed
        stop.wait()


def make_names(store=None, look_interval=30.0):
    source = CountingDocker()
    records = Records([overlay_net()], [ep(OVER_NID, EID, "10.77.0.2/24"),
                                        ep(OVER_NID, EID2, "10.77.0.3/24")])
    names = Names(store or MemoryStore(), "h1", records, source, 30.0, lambda t: None,
                  look_interval=look_interval)
    return names, source


def wait(condition, timeout=5.0):
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.005)


def test_an_event_looks_at_its_container_only_and_the_name_is_stored_and_goes_with_it():
    store = MemoryStore()
    names, source = make_names(store)
    assert names.look() and source.lists == 1
    names._take()  # the job takes the start's "full look due" before its first look
    source.running[CID] = inspected(CID, "web", EID, "10.77.0.2")
    names.changed(CID)
    full, pending = names._take()
    assert not full and names.look_at(pending)
    assert source.lists == 1 and source.inspects == [CID]
    assert store.get(keys.name_record("h1", EID)) is not None
    assert [e.name for e in names.snapshot.entries.values()] == ["web"]
    # A second container: the first is kept from the last read, not asked again.
    source.running[CID2] = inspected(CID2, "db", EID2, "10.77.0.3")
    assert names.look_at({CID2}) and source.inspects == [CID, CID2]
    assert sorted(e.name for e in names.snapshot.entries.values()) == ["db", "web"]
    # web stops: its record goes (the die event's look finds it not running).
    del source.running[CID]
    assert names.look_at({CID}) and source.lists == 1
    assert store.get(keys.name_record("h1", EID)) is None
    assert store.get(keys.name_record("h1", EID2)) is not None


def test_a_network_connect_counts_only_for_a_container_already_running_here():
    names, source = make_names()
    names.look()
    names._take()
    names.changed(CID, network_event=True)  # connected while being started: its start follows
    assert names._take() == (False, set())
    source.running[CID] = inspected(CID, "web", EID, "10.77.0.2")
    names.changed(CID)
    names.look_at(names._take()[1])
    names.changed(CID, network_event=True)  # `docker network connect` of a running one
    assert names._take() == (False, {CID})


def test_the_job_answers_events_with_single_looks_and_still_lists_everything_each_interval():
    names, source = make_names(look_interval=0.5)
    stops = names.start()
    try:
        wait(lambda: names.full_looks == 1)
        for n in range(5):  # a burst of starts, one event each
            cid = f"{n}" * 64
            source.running[cid] = inspected(cid, f"web{n}", EID if n == 0 else EID2, "10.77.0.2")
            source.changed(cid, False)
        wait(lambda: len(set(source.inspects)) == 5)
        assert names.full_looks == 1 and source.lists == 1
        # The safety net: a full look within the interval even when events keep coming.
        wait(lambda: names.full_looks >= 2, timeout=3)
        # A lost stream (or a network made or gone) asks for a full look at once.
        before = names.full_looks
        source.changed(None, False)
        wait(lambda: names.full_looks > before, timeout=0.4)
    finally:
        for stop in stops:
            stop.set()


def test_a_failed_single_look_is_made_good_by_a_full_one():
    names, source = make_names()
    names.look()
    source.fail = True
    assert names.look_at({CID}) is False  # the job then does a full look
    source.fail = False
    source.running[CID] = inspected(CID, "web", EID, "10.77.0.2")
    assert names.look() and [e.name for e in names.snapshot.entries.values()] == ["web"]


def test_a_store_failure_in_a_single_look_makes_the_next_look_a_full_one():
    names, source = make_names()
    names.look()

    class DownRecords:
        def networks(self):
            raise BackendUnavailable("consul: connection refused")

        def endpoints(self, nid=None):
            raise BackendUnavailable("consul: connection refused")

    kept, names.records = names.records, DownRecords()
    stops = names.start()
    try:
        source.running[CID] = inspected(CID, "web", EID, "10.77.0.2")
        time.sleep(0.05)
        lists = source.lists
        source.changed(CID, False)
        time.sleep(0.05)
        names.records = kept
        source.changed(CID2, False)  # the next event: a full look, which finds web
        wait(lambda: source.lists > lists)
        wait(lambda: [e.name for e in names.snapshot.entries.values()] == ["web"])
    finally:
        for stop in stops:
            stop.set()
