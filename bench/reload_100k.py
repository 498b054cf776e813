#!/usr/bin/env python3
"""Measures keygate with a 100,000-key JSON keys file: startup time to a listening port,
SIGHUP reload time (seen from outside, and the "in X ms" keygate logs), and VmRSS around
the reload. Prints figures only; asserts nothing.

    python3 bench/reload_100k.py [--keygate PATH] [--keys N] [--reloads N]
"""
import argparse
import hashlib
import json
import os
import re
import secrets
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))
import harness as h  # noqa: E402

RELOADED_RE = re.compile(r"keys reloaded: (\d+) keys.*? in ([0-9.]+) ms")


def write_keys(path, digests):
    """The keys file, written under a temporary name and renamed into place."""
    doc = {"keys": [{"id": f"k{i:05d}", "hash": "sha256:" + d} for i, d in enumerate(digests, 1)]}
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f, separators=(",", ":"))
    os.replace(tmp, path)


def reload_lines(kg):
    return [m for m in (RELOADED_RE.search(l) for l in kg.stderr().splitlines()) if m]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keygate", default=str(h.DEFAULT_BINARY))
    ap.add_argument("--keys", type=int, default=100_000)
    ap.add_argument("--reloads", type=int, default=5, help="SIGHUP reloads in all (RSS after each)")
    args = ap.parse_args()
    h._binary = os.path.abspath(args.keygate)
    if not os.access(h._binary, os.X_OK):
        sys.exit(f"keygate binary not found or not executable: {h._binary}")

    probe = secrets.token_urlsafe(32)            # a key we can present: first entry
    probe2 = secrets.token_urlsafe(32)           # replaces the last entry on reload
    digests = [hashlib.sha256(probe.encode()).hexdigest()]
    digests += [secrets.token_bytes(32).hex() for _ in range(args.keys - 1)]

    up = h.Upstream()
    cfg = h.make_config(up.port, environment="development",
                        auth={"keys_file": "PLACEHOLDER", "reload_interval": "1h"},
                        logging={"access_log": False})
    kg = h.Keygate(cfg, ready_timeout=120, wait_ready=False)
    path = os.path.join(kg.tmp, "keys.json")
    cfg["auth"]["keys_file"] = path
    with open(kg.config_path, "w") as f:
        f.write(h.to_yaml(cfg) + "\n")
    write_keys(path, digests)
    size_mb = os.path.getsize(path) / 1e6

    try:
        t0 = time.monotonic()
        kg.start()
        if not h.wait_port(kg.port, 120, kg.proc):
            sys.exit(f"keygate did not start:\n{kg.stderr()}")
        startup = time.monotonic() - t0
        with h.Client(kg.port) as c:
            st = c.request("GET", "/", [("X-API-Key", probe)]).status
        # Let the allocator settle before the first reading.
        time.sleep(0.5)
        rss_before = h.rss_kib(kg.pid)

        digests[-1] = hashlib.sha256(probe2.encode()).hexdigest()
        write_keys(path, digests)
        n = len(reload_lines(kg))
        t0 = time.monotonic()
        kg.proc.send_signal(signal.SIGHUP)
        while len(reload_lines(kg)) <= n:
            if time.monotonic() - t0 > 60 or not kg.alive():
                sys.exit(f"no reload line after SIGHUP:\n{kg.stderr()}")
            time.sleep(0.001)
        seen = time.monotonic() - t0
        m = reload_lines(kg)[n]
        with h.Client(kg.port) as c:
            st2 = c.request("GET", "/", [("X-API-Key", probe2)]).status
        time.sleep(0.5)
        rss_after = h.rss_kib(kg.pid)

        # More reloads, to see whether memory settles or keeps growing.
        more = []
        for _ in range(args.reloads - 1):
            digests[-1] = secrets.token_bytes(32).hex()
            write_keys(path, digests)
            n = len(reload_lines(kg))
            kg.proc.send_signal(signal.SIGHUP)
            t1 = time.monotonic()
            while len(reload_lines(kg)) <= n and time.monotonic() - t1 < 60:
                time.sleep(0.001)
            if len(reload_lines(kg)) <= n:
                break
            time.sleep(0.5)
            more.append((reload_lines(kg)[n].group(2), h.rss_kib(kg.pid)))

        print(f"keys file:                {args.keys} keys, {size_mb:.1f} MB JSON")
        print(f"startup to listening:     {startup * 1000:.0f} ms  (first key -> {st})")
        print(f"SIGHUP to reload log:     {seen * 1000:.0f} ms  (keygate logs {m.group(1)} keys in {m.group(2)} ms)")
        print(f"changed key after reload: {st2}")
        print(f"VmRSS before reload:      {rss_before / 1024:.1f} MiB")
        print(f"VmRSS after reload:       {rss_after / 1024:.1f} MiB")
        for i, (ms, rss) in enumerate(more, 2):
            print(f"VmRSS after reload {i}:     {rss / 1024:.1f} MiB  (keygate logs {ms} ms)")
    finally:
        kg.stop()
        kg.cleanup()
        up.stop()


if __name__ == "__main__":
    main()
