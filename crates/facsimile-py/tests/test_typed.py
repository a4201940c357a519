"""Typed updates over dataclasses (and pydantic models when installed):
only the minimal writes are sent."""

import dataclasses
import math
from typing import List, Optional

import pytest

import facsimile
from conftest import Net


@dataclasses.dataclass
class Player:
    name: str
    score: int = 0
    team: Optional[str] = None


@dataclasses.dataclass
class Game:
    round: int
    players: List[Player]
    log: List[str]


def test_dataclass_update_sends_minimal_writes():
    net = Net("server", "client")
    server, client = net
    server.store = {"round": 1, "players": [], "log": [], "extra": "kept"}
    changes = []
    client.on("change", lambda c: changes.append((c.key, c.new)))

    def join(g: Game):
        g.players.append(Player("ada"))
        g.log.append("ada joined")

    before = net.sent
    server.update(join)
    assert net.sent == before + 1  # one message
    assert len(changes) == 2  # one insert into each list
    assert client.store.players[0] == {"name": "ada", "score": 0}

    changes.clear()
    server.update(lambda g: setattr(g.players[0], "score", 10), Game)
    assert changes == [("score", 10)]
    assert client.store.extra == "kept"  # keys the type does not declare stay

    changes.clear()
    server.update(lambda g: None, Game)
    assert changes == []  # unchanged: nothing sent


def test_update_errors_change_nothing(pair):
    a, b = pair
    a.store = {"round": "not a number", "players": [], "log": []}

    def bump(g: Game):
        g.round += 1

    with pytest.raises(TypeError):
        a.update(bump)
    assert b.store.round == "not a number"


def test_plain_update(pair):
    a, b = pair
    a.store = {"n": 1, "l": [1]}

    def change(state):
        state["n"] = 2
        state["l"].append(2)

    a.update(change)
    assert b.store == {"n": 2, "l": [1, 2]}


def test_pydantic_update(pair):
    import pydantic

    class Item(pydantic.BaseModel):
        name: str
        qty: int = 0

    class Stock(pydantic.BaseModel):
        items: List[Item]

    a, b = pair
    a.store = {"items": [{"name": "bolt", "qty": 1}]}

    def restock(s: Stock):
        s.items[0].qty += 5

    a.update(restock)
    assert b.store["items"][0].qty == 6


def test_an_update_keeps_bytes_and_non_finite_floats_it_did_not_touch():
    net = Net("server", "client")
    server, client = net
    server.store = {
        "nan": float("nan"),
        "inf": float("inf"),
        "blob": b"\x00\xff",
        "nested": {"low": float("-inf"), "raw": bytearray(b"ab")},
        "n": 1,
    }
    changes = []
    client.on("change", lambda c: changes.append((c.key, c.new)))

    def bump(state):
        assert state["blob"] == b"\x00\xff"
        assert math.isnan(state["nan"]) and state["inf"] == math.inf
        state["n"] += 1

    before = net.sent
    server.update(bump)
    assert net.sent == before + 1
    assert changes == [("n", 2)]  # nothing written over what was not touched
    assert math.isnan(client.store.nan)
    assert client.store.inf == math.inf
    assert client.store.blob == b"\x00\xff"
    assert client.store.nested.low == -math.inf
    assert client.store.nested.raw == b"ab"

    # Bytes and floats written by an update arrive as they are.
    server.update(lambda s: s.update(blob=b"\x01", nan=float("-inf")))
    assert client.store.blob == b"\x01"
    assert client.store.nan == -math.inf


def test_a_field_left_none_keeps_a_stored_null():
    net = Net("server", "client")
    server, client = net
    server.store = {"round": 1, "players": [{"name": "ada", "team": None}], "log": []}
    changes = []
    client.on("change", lambda c: changes.append((c.key, c.new)))

    def bump(g: Game):
        g.round += 1

    server.update(bump)
    # The null reads as None and the field stays None: nothing is sent for
    # it (as in the Rust crate's typed layer), and the key stays.
    assert changes == [("round", 2)]
    assert "team" in client.store.players[0] and client.store.players[0].team is None

    # Set to None from a value, the field's key is deleted.
    server.store.players[0].team = "red"
    changes.clear()
    server.update(lambda g: setattr(g.players[0], "team", None), Game)
    assert changes == [("team", None)] and "team" not in client.store.players[0]


@dataclasses.dataclass
class Member:
    name: str


@dataclasses.dataclass
class Club:
    members: List[Member]
    leader: Optional[Member] = None


def test_keys_a_type_does_not_declare_stay_with_their_record():
    net = Net("server", "client")
    server, client = net
    ada, bob, cy = ({"name": n, "secret": n.upper()} for n in ("ada", "bob", "cy"))
    server.store = {"members": [ada, bob, cy]}
    changes = []
    client.on("change", lambda c: changes.append(c.key))

    def reverse(c: Club):
        c.members.reverse()

    first = client.store.members[0]
    server.update(reverse)
    assert client.store.to_python() == {"members": [cy, bob, ada]}
    # The elements moved, none was rewritten: each keeps its identity.
    assert changes == [None] and client.store.members[2] is first

    def drop_bob(c: Club):
        del c.members[1]

    server.update(drop_bob)
    assert client.store.to_python() == {"members": [cy, ada]}

    # A record moved to a field takes its keys along; a new one has none.
    def promote(c: Club):
        c.leader = c.members.pop(0)
        c.members.insert(0, Member("dee"))

    server.update(promote)
    assert client.store.to_python() == {"members": [{"name": "dee"}, ada], "leader": cy}

    # One assigned to a field is written over what the field held.
    def replace_leader(c: Club):
        c.leader = Member("eve")

    server.update(replace_leader)
    assert client.store.leader == {"name": "eve", "secret": "CY"}


def test_pydantic_records_keep_their_undeclared_keys():
    import pydantic

    class Item(pydantic.BaseModel):
        name: str

    class Stock(pydantic.BaseModel):
        items: List[Item]

    a, b = Net("alpha", "bravo")
    bolt, nut = {"name": "bolt", "bin": 1}, {"name": "nut", "bin": 2}
    a.store = {"items": [bolt, nut]}

    def drop_first(s: Stock):
        s.items.pop(0)

    a.update(drop_first)
    assert b.store.to_python() == {"items": [nut]}
