"""The package's exceptions are FacsimileErrors and belong to the builtin
family of their meaning, so that `except TimeoutError`, `except
ConnectionError`, `except ValueError` (and so on) catch them as well."""

import pytest

import facsimile
from conftest import Net

FAMILIES = {
    "NetTimeoutError": (facsimile.NetError, TimeoutError),
    "LockTimeoutError": (facsimile.FacsimileError, TimeoutError),
    "ClosedError": (facsimile.NetError, ConnectionError),
    "ConnectError": (facsimile.NetError, ConnectionError),
    "ReceiveError": (facsimile.FacsimileError, ValueError),
    "TooLargeError": (facsimile.FacsimileError, ValueError),
    "WrongKindError": (facsimile.FacsimileError, TypeError),
    "TypeMismatchError": (facsimile.FacsimileError, TypeError),
    "UnknownObjectError": (facsimile.FacsimileError, LookupError),
}


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_families(name):
    cls = getattr(facsimile, name)
    assert name in facsimile.__all__ and cls.__module__ == "facsimile"
    for base in FAMILIES[name]:
        assert issubclass(cls, base), base
    assert issubclass(cls, facsimile.FacsimileError)
    e = cls("what happened")
    assert str(e) == "what happened" and e.args == ("what happened",)


def test_raised_errors_are_caught_by_their_family():
    net = Net("alpha", "bravo", max_message=4096)
    a, b = net
    a.store = {"m": {}}
    with pytest.raises(ValueError, match="4096 bytes") as e:
        a.store.s = "x" * 5000
    assert type(e.value) is facsimile.TooLargeError
    with pytest.raises(ValueError) as e:
        b.receive(b"\xff" * 40)
    assert type(e.value) is facsimile.ReceiveError
    guard = a.lock(a.store.m)
    with pytest.raises(TimeoutError) as e:
        b.lock(b.store.m, timeout=0.05)
    assert type(e.value) is facsimile.LockTimeoutError
    assert "withdrawn" in str(e.value)
    guard.release()


@pytest.mark.parametrize(
    "seconds",
    [(0, 0), (0, 1), (1, 0), (-1, 5), (1, float("inf")), (float("nan"), 1), (1e-9, 1), (1, 1e-4)],
)
def test_failure_detection_takes_positive_finite_seconds(seconds):
    with pytest.raises(ValueError, match="failure_detection"):
        facsimile.Facsimile("alpha", failure_detection=seconds)
    facsimile.Facsimile("alpha", failure_detection=(0.5, 5))
    facsimile.Facsimile("alpha", failure_detection=(0.001, 0.001))
