"""The map_set, array_push and nested workloads (bench/src/workload.rs)
through each library's public Python API: facsimile's proxies, pycrdt and
loro. Every operation is made on one replica, encoded and applied on the
other one by one, as a live application would; nested builds 10k maps,
sends the document to a joiner in one message and reads it there. Each
(system, workload) runs in its own process, three times; the median is
reported, every run checked for the expected contents.

    python bench/python/bench.py            # every workload, every system
    python bench/python/bench.py --quick    # a tenth of the sizes
"""

import json
import os
import statistics
import subprocess
import sys
import time

SIZES = {"map_set": 100_000, "array_push": 100_000, "nested": 10_000}
SYSTEMS = ["facsimile", "pycrdt", "loro"]
FIELDS, TAGS = 10, 10


def item(i):
    d = {f"f{j}": (i * 100 + j if j < FIELDS // 2 else f"v{i}-{j}") for j in range(FIELDS)}
    d["tags"] = [i * 100 + 50 + k for k in range(TAGS)]
    return d


def expect_nested(value, n):
    assert len(value) == n and value["item7"] == item(7), "nested: wrong contents"


# ------------------------------------------------------------------ facsimile


def facsimile_pair():
    import facsimile

    a, b = facsimile.Facsimile("a"), facsimile.Facsimile("b")
    a.send, b.send = b.receive, a.receive
    return a, b


def facsimile_map_set(n):
    a, b = facsimile_pair()
    a.store = {}
    m = a.store
    t = time.perf_counter()
    for i in range(n):
        m[f"k{i}"] = i
    t = time.perf_counter() - t
    assert len(b.store) == n and b.store[f"k{n - 1}"] == n - 1
    return t


def facsimile_array_push(n):
    a, b = facsimile_pair()
    a.store = []
    items = a.store
    t = time.perf_counter()
    for i in range(n):
        items.append(i)
    t = time.perf_counter() - t
    assert len(b.store) == n and b.store[n - 1] == n - 1
    return t


def facsimile_nested(n):
    import facsimile

    t = time.perf_counter()
    a = facsimile.Facsimile("a")
    a.send = lambda m: None  # alone until the joiner comes
    a.store = {"items": {f"item{i}": item(i) for i in range(n)}}
    b = facsimile.Facsimile("b")
    a.send, b.send = b.receive, a.receive
    b.sync()
    value = b.store["items"].to_python()
    t = time.perf_counter() - t
    expect_nested(value, n)
    return t


# --------------------------------------------------------------------- pycrdt


def pycrdt_pair(kind):
    import pycrdt

    a, b = pycrdt.Doc(), pycrdt.Doc()
    ra, rb = a.get("root", type=kind), b.get("root", type=kind)
    sub = a.observe(lambda event: b.apply_update(event.update))
    return ra, rb, sub


def pycrdt_map_set(n):
    import pycrdt

    m, other, _sub = pycrdt_pair(pycrdt.Map)
    t = time.perf_counter()
    for i in range(n):
        m[f"k{i}"] = i
    t = time.perf_counter() - t
    assert len(other) == n and other[f"k{n - 1}"] == n - 1
    return t


def pycrdt_array_push(n):
    import pycrdt

    arr, other, _sub = pycrdt_pair(pycrdt.Array)
    t = time.perf_counter()
    for i in range(n):
        arr.append(i)
    t = time.perf_counter() - t
    assert len(other) == n and other[n - 1] == n - 1
    return t


def pycrdt_nested(n):
    import pycrdt

    t = time.perf_counter()
    a = pycrdt.Doc()
    items = a.get("items", type=pycrdt.Map)
    with a.transaction():
        for i in range(n):
            d = item(i)
            tags = d.pop("tags")
            d["tags"] = pycrdt.Array(tags)
            items[f"item{i}"] = pycrdt.Map(d)
    b = pycrdt.Doc()
    b.apply_update(a.get_update())
    value = b.get("items", type=pycrdt.Map).to_py()
    t = time.perf_counter() - t
    # pycrdt reads numbers back as floats (Yjs numbers): compare as such.
    assert len(value) == n and value["item7"]["f0"] == 700 and value["item7"]["tags"][0] == 750
    return t


# ----------------------------------------------------------------------- loro


def loro_pair():
    import loro

    a, b = loro.LoroDoc(), loro.LoroDoc()

    def forward(update):
        b.import_(update)
        return True

    sub = a.subscribe_local_update(forward)
    return a, b, sub


def loro_map_set(n):
    a, b, _sub = loro_pair()
    m = a.get_map("root")
    t = time.perf_counter()
    for i in range(n):
        m.insert(f"k{i}", i)
        a.commit()
    t = time.perf_counter() - t
    bm = b.get_map("root")
    assert len(bm) == n and bm.get(f"k{n - 1}").value == n - 1
    return t


def loro_array_push(n):
    a, b, _sub = loro_pair()
    lst = a.get_list("root")
    t = time.perf_counter()
    for i in range(n):
        lst.push(i)
        a.commit()
    t = time.perf_counter() - t
    bl = b.get_list("root")
    assert len(bl) == n and bl.get(n - 1).value == n - 1
    return t


def loro_nested(n):
    import loro

    t = time.perf_counter()
    a = loro.LoroDoc()
    items = a.get_map("items")
    for i in range(n):
        d = item(i)
        child = items.insert_container(f"item{i}", loro.LoroMap())
        for k, v in d.items():
            if k == "tags":
                tags = child.insert_container("tags", loro.LoroList())
                for x in v:
                    tags.push(x)
            else:
                child.insert(k, v)
    a.commit()
    b = loro.LoroDoc()
    b.import_(a.export(loro.ExportMode.Snapshot()))
    value = b.get_deep_value()["items"]
    t = time.perf_counter() - t
    expect_nested(value, n)
    return t


def one(system, workload, n):
    return globals()[f"{system}_{workload}"](n)


def main():
    if sys.argv[1:2] == ["--one"]:
        system, workload, n = sys.argv[2], sys.argv[3], int(sys.argv[4])
        print(json.dumps(one(system, workload, n)))
        return
    scale = 10 if "--quick" in sys.argv else 1
    runs = 3
    versions = {}
    for s in SYSTEMS:
        mod = __import__(s)
        versions[s] = getattr(mod, "__version__", None) or subprocess.run(
            [sys.executable, "-m", "pip", "show", s], capture_output=True, text=True
        ).stdout.split("Version: ")[1].split()[0]
    print(f"python {sys.version.split()[0]}; " + ", ".join(f"{s} {v}" for s, v in versions.items()))
    print(f"{'workload':<12} " + " ".join(f"{s:>12}" for s in SYSTEMS) + "   facsimile / best peer")
    for workload, n in SIZES.items():
        n //= scale
        medians = {}
        for s in SYSTEMS:
            times = []
            for _ in range(runs):
                out = subprocess.run(
                    [sys.executable, __file__, "--one", s, workload, str(n)],
                    capture_output=True, text=True, check=True, env=os.environ,
                )
                times.append(json.loads(out.stdout))
            medians[s] = statistics.median(times)
        best = min(medians[s] for s in SYSTEMS if s != "facsimile")
        cells = " ".join(f"{medians[s] * 1000:>9.1f} ms" for s in SYSTEMS)
        print(f"{workload + ' ' + str(n):<12} {cells}   {medians['facsimile'] / best:.2f}")


if __name__ == "__main__":
    main()
