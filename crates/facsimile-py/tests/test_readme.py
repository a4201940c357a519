"""The README's Python example runs as written: two processes mirror a
dict over a relay."""

import re

from conftest import ROOT, python_child


def example():
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## From Python") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_example(relay):
    code = example().replace("127.0.0.1:7878", relay.addr)
    alice = python_child(code, "alice")
    try:
        assert alice.stdout.readline() == "score: 0 -> 1 (from here)\n"
        assert alice.stdout.readline() == "enter to leave\n"
        bob = python_child(code, "bob")
        out, err = bob.communicate("\n", timeout=60)
        assert bob.returncode == 0, err
        assert out.splitlines() == ["score: 1 -> 2 (from here)", "enter to leave"]
        assert alice.stdout.readline() == "score: 1 -> 2 (from bob)\n"
        alice.communicate("\n", timeout=60)
        assert alice.returncode == 0
    finally:
        if alice.poll() is None:
            alice.kill()
            alice.wait()
