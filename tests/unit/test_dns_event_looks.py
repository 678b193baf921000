"""A dockerd event makes pynet look at that event's container only (issue 21, names within
200 ms of `docker run` also in a burst): one inspect per container named, not a list and
inspect of every container; the full list stays the safety net (at start, every
look_interval, after a lost event stream or a failure)."""
from __future__ import annotations

import time

import docker
import pytest

from driver.names import docker_names
from driver.names.docker_names import DockerNames, event_target, summary_of
from driver.names.service import Names
from pynet_core.errors import BackendUnavailable
from pynet_core.store import keys
from pynet_core.store.memory import MemoryStore
from tests.harness.names_records import OVER_NID, Records, container, ep, on, overlay_net

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
    # Only stopped or gone ones: docker_gwbridge is not read, and says so (None, not {}).
    calls.clear()
    assert source.read_containers([CID2, "gone"]) == ({CID2: None, "gone": None}, None)
    assert calls == [CID2, "gone"]
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


# --- what a look at one container costs in the store ----------------------------------------
class CountingStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def list(self, prefix):
        self.calls.append(f"list {prefix}")
        return super().list(prefix)

    def get(self, key):
        self.calls.append(f"get {key}")
        return super().get(key)


class CountingRecords(Records):
    """pynet's own records, counting the reads (the ledger's networks/endpoints/endpoint)."""

    def __init__(self, networks, endpoints) -> None:
        super().__init__(networks, endpoints)
        self.reads: list[str] = []

    def networks(self):
        self.reads.append("networks")
        return super().networks()

    def endpoints(self, nid=None):
        self.reads.append("endpoints")
        return super().endpoints(nid)

    def endpoint(self, nid, eid):
        self.reads.append(f"endpoint {eid[:4]}")
        return next((e for e in self._endpoints if (e.network_id, e.id) == (nid, eid)), None)


def test_a_look_at_one_container_reads_its_endpoint_only_and_writes_its_record_only():
    store = CountingStore()
    recs = CountingRecords([overlay_net()], [ep(OVER_NID, EID, "10.77.0.2/24"),
                                             ep(OVER_NID, EID2, "10.77.0.3/24")])
    source = CountingDocker()
    source.running[CID] = inspected(CID, "web", EID, "10.77.0.2")
    names = Names(store, "h1", recs, source, 30.0, lambda t: None)
    assert names.look() and recs.reads == ["networks", "endpoints"]
    recs.reads.clear()
    store.calls.clear()
    source.running[CID2] = inspected(CID2, "db", EID2, "10.77.0.3")
    assert names.look_at({CID2})
    assert recs.reads == [f"endpoint {EID2[:4]}"]  # no listing of networks or endpoints
    assert not any(c.startswith("list") for c in store.calls)  # nor of the name records
    assert store.get(keys.name_record("h1", EID2)) is not None
    assert sorted(e.name for e in names.snapshot.entries.values()) == ["db", "web"]
    # web goes: its record is deleted, db's untouched.
    db_version = store.get(keys.name_record("h1", EID2)).version
    del source.running[CID]
    assert names.look_at({CID}) and recs.reads == [f"endpoint {EID2[:4]}"]
    assert store.get(keys.name_record("h1", EID)) is None
    assert store.get(keys.name_record("h1", EID2)).version == db_version
    # The full look still lists everything (the safety net).
    recs.reads.clear()
    assert names.look() and recs.reads == ["networks", "endpoints"]


def test_publish_changes_writes_only_the_difference_and_puts_right_what_it_finds():
    from driver.names.store_names import NamePublisher
    from tests.harness.names_records import entry
    store = MemoryStore()
    publisher = NamePublisher(store, "h1")
    a, b, c = ("a" * 64, entry("h1", "a" * 64, "web", "10.77.0.2")), \
        ("b" * 64, entry("h1", "b" * 64, "db", "10.77.0.3")), ("c" * 64, entry("h1", "c" * 64, "x", "10.77.0.4"))
    assert publisher.publish_changes({}, dict([a, b])).created == 2
    # b deleted by hand, c already there (a lost race): both put right; a gone.
    store.delete(keys.name_record("h1", b[0]))
    store.create(keys.name_record("h1", c[0]), b"{}")
    done = publisher.publish_changes(dict([a]), dict([b, c]))
    assert (done.created, done.replaced, done.removed) == (1, 1, 1)
    held = {e.key for e in store.list(keys.names_host("h1"))}
    assert held == {keys.name_record("h1", b[0]), keys.name_record("h1", c[0])}
    # Nothing changed: nothing written.
    assert publisher.publish_changes(dict([b, c]), dict([b, c])).count() == 0


def test_the_watcher_reads_claims_again_only_for_an_address_it_has_not_seen_and_beats_once_a_second():
    from driver.names.store_names import NamePublisher, NameWatcher
    from tests.harness.names_records import OVERLAY_KEY, Clock, entry
    store, clock = MemoryStore(), Clock()
    watcher = NameWatcher(store, "h1", 30.0, lambda: [], lambda t: None, clock)
    claims = {"10.77.0.3": ("h2", 5)}
    asked = []

    class Claims:
        def owners(self, space, pool):
            asked.append(pool)
            return dict(claims)

    watcher.claims = Claims()
    beats_read = []
    real_list = store.list

    def counting_list(prefix):
        if "alive" in prefix:
            beats_read.append(prefix)
        return real_list(prefix)
    store.list = counting_list
    publisher = NamePublisher(store, "h2")
    web = ("2" * 64, entry("h2", "2" * 64, "web", "10.77.0.3"))
    publisher.publish(dict([web]))
    assert watcher.refresh().answer("web", "A", [OVERLAY_KEY]).addresses
    assert len(asked) == 1 and len(beats_read) == 1
    # The same address again (another record changed nothing of it): no new read of claims.
    watcher.refresh()
    assert len(asked) == 1 and len(beats_read) == 1
    # A new container whose claim the last read did not hold: claims read again, once.
    claims["10.77.0.4"] = ("h2", 6)
    db = ("3" * 64, entry("h2", "3" * 64, "db", "10.77.0.4"))
    publisher.publish(dict([web, db]))
    assert watcher.refresh().answer("db", "A", [OVERLAY_KEY]).addresses
    assert len(asked) == 2
    # A forged one (an address nobody claims) makes one read and is still refused.
    forged = ("4" * 64, entry("h2", "4" * 64, "evil", "10.77.0.9"))
    publisher.publish(dict([web, db, forged]))
    assert not watcher.refresh().answer("evil", "A", [OVERLAY_KEY]).mine
    assert len(asked) == 3
    clock.now += 1
    watcher.refresh()
    assert len(beats_read) == 2


def test_a_container_stopping_leaves_the_others_docker_gwbridge_askers_alone():
    """An overlay container asks from its docker_gwbridge address: another's `die` must not
    forget it (the die's look does not read docker_gwbridge)."""
    from ipaddress import ip_address

    class GwDocker(CountingDocker):
        gateways = {CID: ["172.18.0.2"], CID2: ["172.18.0.3"]}

        def read(self):
            found = super().read()
            return None if found is None else (found[0], dict(self.gateways))

        def read_containers(self, cids):
            found, _ = super().read_containers(cids)
            running = any(v is not None for v in found.values())
            return found, ({c: a for c, a in self.gateways.items() if c in self.running}
                           if running else None)

    source = GwDocker()
    records = Records([overlay_net()], [ep(OVER_NID, EID, "10.77.0.2/24"),
                                        ep(OVER_NID, EID2, "10.77.0.3/24")])
    names = Names(MemoryStore(), "h1", records, source, 30.0, lambda t: None)
    source.running[CID] = inspected(CID, "web", EID, "10.77.0.2")
    source.running[CID2] = inspected(CID2, "db", EID2, "10.77.0.3")
    names.look()
    assert names.networks_of(ip_address("172.18.0.2")) and names.networks_of(ip_address("172.18.0.3"))
    del source.running[CID2]
    assert names.look_at({CID2})
    assert names.networks_of(ip_address("172.18.0.2"))  # web still asks from docker_gwbridge
    assert not names.networks_of(ip_address("172.18.0.3"))  # db's address names no one now
