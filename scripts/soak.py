#!/usr/bin/env python3
"""Soak test and drain-under-load test for keygate (`make soak`).

Phase 1, soak (SOAK_SECONDS, default 60): keygate with 2 worker threads in front of a
small threaded upstream (a separate Python process), a keys file rewritten every second
(two alternating versions, both holding key K; auth.reload_interval 1s) and SIGHUP sent
in bursts of 5 every 10 s. 64 keep-alive connections carry authorised traffic with K
(GETs with response bodies of several sizes, POSTs with a body, a few slow requests),
driven by 4 client threads, each multiplexing 16 connections. Every response body is
checked byte for byte. Fails on: any non-2xx answer, any connection error or unexpected
close, any corrupt or truncated response, a key or a wrong identity reaching the
upstream, no successful reload, keygate dying, or VmRSS growing by 10% or more between
the 10th second and the end.

Phase 2, drain under load: SIGTERM while the 64 connections are busy (clients keep
reconnecting). Fails on: a truncated or corrupt response, a non-2xx answer, a request
that was fully sent and then reset without an answer, or an exit code other than 0.
A request that could not be sent (connection refused, or closed before the request was
fully written) is fine. So is one answered by a plain close (EOF): on loopback that
means keygate closed the idle keep-alive connection before the request reached it,
while a reset means keygate closed it with the request unread in its socket buffer.
The moment the listener closed (bracketed by a connect prober) is printed too.

Usage: scripts/soak.py [--keygate build/keygate] [--seconds 60]
Everything listens on 127.0.0.1; every loop is bounded in time.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))
import harness as h  # noqa: E402  (free_port, new_key, key_hash, to_yaml, rss_kib, clean_env)

KEY_ID = "soak"
BODY_SIZES = (64, 512, 4096, 16384, 65536)
POST_BODY = 2048
SLOW_MS = 50


def make_body(seed: str, n: int) -> bytes:
    """A body of n bytes that depends on `seed` (checked byte for byte by both sides)."""
    s = (seed + "|").encode()
    return (s * (n // len(s) + 1))[:n]


# =========================================================================== upstream process

def upstream_main(port: int) -> None:
    """A threaded HTTP/1.1 origin: answers /soak/...?n=N&d=MS with N body bytes after MS
    milliseconds, checks what keygate forwarded, and reports its counts on /__stats."""
    key = os.environ.get("SOAK_KEY", "").encode()
    stats = Counter()
    lock = threading.Lock()
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", port))
    ls.listen(1024)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))

    def bump(name, n=1):
        with lock:
            stats[name] += n

    def read_more(sock, buf, limit):
        data = sock.recv(262144)
        if not data:
            raise EOFError
        buf += data
        if len(buf) > limit:
            raise EOFError

    def handle(sock):
        sock.settimeout(300)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = bytearray()
        try:
            for _ in range(10_000_000):
                while b"\r\n\r\n" not in buf:
                    read_more(sock, buf, 1 << 20)
                i = buf.index(b"\r\n\r\n")
                head = bytes(buf[:i])
                del buf[:i + 4]
                lines = head.split(b"\r\n")
                method, target, _ = lines[0].decode("latin-1").split(" ")
                fields = {}
                for line in lines[1:]:
                    n, _, v = line.partition(b":")
                    fields.setdefault(n.strip().lower().decode("latin-1"), []).append(v.strip())
                body = bytearray()
                if b"chunked" in b"".join(fields.get("transfer-encoding", [])).lower():
                    for _ in range(1_000_000):
                        while b"\r\n" not in buf:
                            read_more(sock, buf, 1 << 22)
                        j = buf.index(b"\r\n")
                        size = int(bytes(buf[:j]).split(b";")[0], 16)
                        del buf[:j + 2]
                        if size == 0:
                            while b"\r\n" not in buf:
                                read_more(sock, buf, 1 << 22)
                            while not buf.startswith(b"\r\n"):  # trailers (none expected)
                                del buf[:buf.index(b"\r\n") + 2]
                                while b"\r\n" not in buf:
                                    read_more(sock, buf, 1 << 22)
                            del buf[:2]
                            break
                        while len(buf) < size + 2:
                            read_more(sock, buf, 1 << 22)
                        body += buf[:size]
                        del buf[:size + 2]
                else:
                    cl = int(fields.get("content-length", [b"0"])[0])
                    while len(buf) < cl:
                        read_more(sock, buf, 1 << 22)
                    body += buf[:cl]
                    del buf[:cl]
                path, _, query = target.partition("?")
                if path == "/__stats":
                    with lock:
                        doc = json.dumps(dict(stats)).encode()
                    sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(doc) + doc)
                    continue
                bump("requests")
                if key and (key in head or key in body):
                    bump("key_leaks")
                if fields.get("x-keygate-key-id") != [KEY_ID.encode()]:
                    bump("bad_identity")
                if method == "POST" and bytes(body) != make_body(target + "req", POST_BODY):
                    bump("bad_request_body")
                q = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
                if q.get("d"):
                    time.sleep(int(q["d"]) / 1000)
                out = make_body(target, int(q.get("n", "0")))
                sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                             b"Content-Length: %d\r\n\r\n" % len(out) + out)
        except (EOFError, OSError, ValueError):
            pass
        finally:
            sock.close()

    while True:
        try:
            s, _ = ls.accept()
        except OSError:
            continue
        threading.Thread(target=handle, args=(s,), daemon=True).start()


# =========================================================================== clients

def parse_response(buf: bytearray):
    """(status, fields, body, consumed, close) for the complete response at the start of
    buf, or None while it is incomplete."""
    i = buf.find(b"\r\n\r\n")
    if i < 0:
        return None
    lines = bytes(buf[:i]).split(b"\r\n")
    status = int(lines[0].split(b" ")[1])
    fields: dict[bytes, list[bytes]] = {}
    for line in lines[1:]:
        n, _, v = line.partition(b":")
        fields.setdefault(n.strip().lower(), []).append(v.strip())
    pos = i + 4
    if b"chunked" in b"".join(fields.get(b"transfer-encoding", [])).lower():
        body = bytearray()
        for _ in range(1_000_000):
            j = buf.find(b"\r\n", pos)
            if j < 0:
                return None
            size = int(bytes(buf[pos:j]).split(b";")[0], 16)
            pos = j + 2
            if size == 0:
                k = buf.find(b"\r\n\r\n", pos - 2)
                if k < 0:
                    return None
                pos = k + 4
                break
            if len(buf) < pos + size + 2:
                return None
            body += buf[pos:pos + size]
            pos += size + 2
        body = bytes(body)
    else:
        cl = int(fields.get(b"content-length", [b"0"])[0])
        if len(buf) < pos + cl:
            return None
        body = bytes(buf[pos:pos + cl])
        pos += cl
    close = any(b"close" in v.lower() for v in fields.get(b"connection", []))
    return status, fields, body, pos, close


class Control:
    def __init__(self):
        self.stop = threading.Event()
        self.t_sigterm: float | None = None


class Conn:
    def __init__(self, cid: int):
        self.cid = cid
        self.sock: socket.socket | None = None
        self.state = "dead"
        self.retry_at = 0.0
        self.out = b""
        self.sent = 0
        self.target = ""
        self.n = 0
        self.t_start = 0.0
        self.t_sent = 0.0
        self.inbuf = bytearray()
        self.served = 0


class ClientThread(threading.Thread):
    """Drives `nconns` keep-alive connections with one request in flight on each."""

    def __init__(self, tid: int, nconns: int, port: int, key: str, ctl: Control, hard_stop: float):
        super().__init__(daemon=True)
        self.tid, self.port, self.key, self.ctl, self.hard_stop = tid, port, key, ctl, hard_stop
        self.conns = [Conn(i) for i in range(nconns)]
        self.sel = selectors.DefaultSelector()
        self.seq = 0
        # figures, per phase where it matters
        self.ok = Counter()            # phase -> 2xx responses
        self.non2xx = Counter()        # (phase, status) -> count
        self.corrupt = []              # descriptions
        self.truncated = []
        self.soak_errors = []          # anything going wrong before SIGTERM
        self.unanswered = []           # (t_sent, fresh connection, error, target) after SIGTERM
        self.not_sent = 0              # drain: closed/refused before the request was written
        self.refused = 0
        self.max_latency = 0.0

    def phase(self) -> str:
        return "soak" if self.ctl.t_sigterm is None else "drain"

    def run(self) -> None:
        for c in self.conns:
            self.open(c)
        while not self.ctl.stop.is_set() and time.monotonic() < self.hard_stop:
            for key, mask in self.sel.select(0.05):
                c = key.data
                if mask & selectors.EVENT_WRITE and c.state == "sending":
                    self.on_write(c)
                elif mask & selectors.EVENT_READ and c.state == "reading":
                    self.on_read(c)
            now = time.monotonic()
            for c in self.conns:
                if c.state == "dead" and now >= c.retry_at:
                    self.open(c)
        for c in self.conns:
            self.drop(c)

    # -- connection lifecycle
    def open(self, c: Conn) -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(2)
        try:
            s.connect(("127.0.0.1", self.port))
        except OSError as e:
            s.close()
            if self.phase() == "soak":
                self.soak_errors.append(f"connect: {e!r}")
            else:
                self.refused += 1
            c.state, c.retry_at = "dead", time.monotonic() + 0.05
            return
        s.setblocking(False)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c.sock, c.served, c.inbuf = s, 0, bytearray()
        self.sel.register(s, selectors.EVENT_WRITE, c)
        self.start_request(c)

    def drop(self, c: Conn, retry_in: float = 0.0) -> None:
        if c.sock is not None:
            try:
                self.sel.unregister(c.sock)
            except (KeyError, ValueError):
                pass
            c.sock.close()
            c.sock = None
        c.state, c.retry_at = "dead", time.monotonic() + retry_in

    def start_request(self, c: Conn) -> None:
        self.seq += 1
        seq = self.seq
        n = BODY_SIZES[seq % len(BODY_SIZES)]
        d = SLOW_MS if seq % 16 == 7 else 0
        c.target = f"/soak/{self.tid}-{c.cid}-{seq}?n={n}&d={d}"
        c.n = n
        if seq % 5 == 0:
            body = make_body(c.target + "req", POST_BODY)
            c.out = (f"POST {c.target} HTTP/1.1\r\nHost: soak.local\r\nX-API-Key: {self.key}\r\n"
                     f"Content-Length: {len(body)}\r\n\r\n").encode() + body
        else:
            c.out = (f"GET {c.target} HTTP/1.1\r\nHost: soak.local\r\nX-API-Key: {self.key}\r\n\r\n").encode()
        c.sent = 0
        c.t_start = time.monotonic()
        c.inbuf = bytearray()
        c.state = "sending"
        self.sel.modify(c.sock, selectors.EVENT_WRITE, c)

    # -- events
    def on_write(self, c: Conn) -> None:
        try:
            n = c.sock.send(c.out[c.sent:])
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            self.lost(c, e)
            return
        c.sent += n
        if c.sent == len(c.out):
            c.t_sent = time.monotonic()
            c.state = "reading"
            self.sel.modify(c.sock, selectors.EVENT_READ, c)

    def on_read(self, c: Conn) -> None:
        try:
            data = c.sock.recv(262144)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            self.lost(c, e)
            return
        if not data:
            self.lost(c, None)
            return
        c.inbuf += data
        res = parse_response(c.inbuf)
        if res is not None:
            self.complete(c, res)

    def complete(self, c: Conn, res) -> None:
        status, _, body, consumed, close = res
        phase = self.phase()
        self.max_latency = max(self.max_latency, time.monotonic() - c.t_start)
        if 200 <= status < 300:
            self.ok[phase] += 1
            if body != make_body(c.target, c.n):
                self.corrupt.append(f"{phase}: body of {c.target} differs ({len(body)} bytes)")
        else:
            self.non2xx[(phase, status)] += 1
        if len(c.inbuf) > consumed:
            self.corrupt.append(f"{phase}: {len(c.inbuf) - consumed} unexpected bytes after {c.target}")
        c.served += 1
        if close:
            if phase == "soak":
                self.soak_errors.append(f"Connection: close during the soak ({c.target})")
            self.drop(c)
        else:
            self.start_request(c)

    def lost(self, c: Conn, err) -> None:
        """The connection failed (reset, EOF, error) while a request was outstanding."""
        what = "EOF" if err is None else type(err).__name__
        phase = self.phase()
        if c.state == "reading" and c.inbuf:
            self.truncated.append(f"{phase}: {what} after {len(c.inbuf)} response bytes of {c.target}")
        elif phase == "soak":
            self.soak_errors.append(f"{what} with a request {c.state} ({c.target})")
        elif c.state == "sending":
            self.not_sent += 1
        else:
            self.unanswered.append((c.t_sent, c.served == 0, what, c.target))
        self.drop(c, 0.05)


def listener_prober(port: int, ctl: Control, out: dict, hard_stop: float) -> None:
    """Connects again and again: the last success and the first refusal bracket the
    moment the main listener closed."""
    for _ in range(100_000):
        if time.monotonic() > hard_stop:
            return
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                out["last_ok"] = time.monotonic()
        except OSError:
            if ctl.t_sigterm is not None:
                out["first_refused"] = time.monotonic()
                return
        time.sleep(0.002)


# =========================================================================== driver

def keys_file_text(version: int, key: str, extras: list[str]) -> str:
    entries = [{"id": KEY_ID, "key": key}]
    if version % 2 == 0:
        entries.append({"id": "extra-a", "hash": h.key_hash(extras[0])})
    else:
        entries.append({"id": "extra-b", "hash": h.key_hash(extras[1]), "scopes": ["x:y"]})
        entries.append({"id": "extra-c", "hash": h.key_hash(extras[2]), "disabled": True})
    return h.to_yaml({"keys": entries}) + "\n"


def write_keys(path: str, text: str, atomic: bool) -> None:
    if atomic:
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    else:
        with open(path, "w") as f:
            f.write(text)


def metric(text: str, name: str, labels: str = "") -> float | None:
    m = re.search(r"^" + re.escape(name) + (re.escape("{" + labels + "}") if labels else r"(\{[^}]*\})?")
                  + r" ([0-9.eE+-]+)$", text, re.M)
    return float(m.group(m.lastindex)) if m else None


def http_get(port: int, target: str, timeout: float = 2.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(f"GET {target} HTTP/1.1\r\nHost: soak.local\r\nConnection: close\r\n\r\n".encode())
        buf = bytearray()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            res = parse_response(buf)
            if res is not None:
                return res[2]
            try:
                chunk = s.recv(65536)
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
    return b""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--keygate", default=os.environ.get("KEYGATE", str(REPO / "build" / "keygate")))
    ap.add_argument("--seconds", type=float, default=float(os.environ.get("SOAK_SECONDS", "60")))
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--client-threads", type=int, default=4)
    ap.add_argument("--keygate-threads", type=int, default=2)
    ap.add_argument("--upstream-port", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.upstream_port:
        upstream_main(args.upstream_port)
        return 0

    binary = os.path.abspath(args.keygate)
    if not os.access(binary, os.X_OK):
        print(f"soak: keygate binary not found: {binary} (build it, or set KEYGATE=path)", file=sys.stderr)
        return 2
    seconds = max(12.0, args.seconds)  # the 10th-second memory sample needs a longer run
    tmp = tempfile.mkdtemp(prefix="keygate-soak-")
    key = h.new_key()
    extras = [h.new_key() for _ in range(3)]
    failures: list[str] = []
    up = kg = None
    try:
        # ---- upstream (its own process, so it does not share the clients' GIL)
        up_port = h.free_port()
        up = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--upstream-port", str(up_port)],
                              env=dict(os.environ, SOAK_KEY=key), stdin=subprocess.DEVNULL)
        if not h.wait_port(up_port, 5, up):
            print("soak: the upstream did not start", file=sys.stderr)
            return 2

        # ---- keygate
        keys_path = os.path.join(tmp, "keys.yaml")
        write_keys(keys_path, keys_file_text(0, key, extras), atomic=True)
        port, admin = h.free_port(), h.free_port()
        cfg = {
            "environment": "production",
            "listen": {"address": "127.0.0.1", "port": port},
            "upstream": {"url": f"http://127.0.0.1:{up_port}", "connect_timeout": "2s",
                         "response_timeout": "10s", "max_idle_connections": 128},
            "admin": {"address": "127.0.0.1", "port": admin},
            "auth": {"keys_file": keys_path, "reload_interval": "1s", "failed_attempts": {"max": 0}},
            "limits": {"drain_delay": "0s", "drain_timeout": "15s"},
            "threads": args.keygate_threads,
        }
        cfg_path = os.path.join(tmp, "keygate.yaml")
        with open(cfg_path, "w") as f:
            f.write(h.to_yaml(cfg) + "\n")
        stderr_path = os.path.join(tmp, "stderr.log")
        with open(stderr_path, "wb") as err:
            kg = subprocess.Popen([binary, "--config", cfg_path], stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=err, env=h.clean_env(), cwd=tmp)
        if not h.wait_port(port, 10, kg):
            print(f"soak: keygate did not start:\n{open(stderr_path).read()}", file=sys.stderr)
            return 2

        # ---- phase 1: soak
        ctl = Control()
        hard_stop = time.monotonic() + seconds + 60
        per = [args.connections // args.client_threads] * args.client_threads
        per[0] += args.connections - sum(per)
        clients = [ClientThread(i, n, port, key, ctl, hard_stop) for i, n in enumerate(per)]
        print(f"soak: keygate pid {kg.pid} ({args.keygate_threads} threads), {args.connections} connections, {args.client_threads} client "
              f"threads, {seconds:.0f} s, keys file rewritten every 1 s, SIGHUP x5 every 10 s", flush=True)
        t0 = time.monotonic()
        for c in clients:
            c.start()
        rss10 = rss_end = rss_max = None
        version, hups, crashed = 0, 0, False
        next_rewrite, next_burst, next_report = t0 + 1, t0 + 10, t0 + 10
        for _ in range(int(seconds * 20) + 100):
            now = time.monotonic()
            if now >= t0 + seconds:
                break
            if kg.poll() is not None:
                crashed = True
                failures.append(f"keygate exited during the soak (code {kg.returncode})")
                break
            if now >= next_rewrite:
                version += 1
                write_keys(keys_path, keys_file_text(version, key, extras), atomic=version % 4 != 1)
                next_rewrite += 1
            if now >= next_burst:
                for _ in range(5):
                    kg.send_signal(signal.SIGHUP)
                    hups += 1
                    time.sleep(0.01)
                next_burst += 10
            rss = h.rss_kib(kg.pid)
            rss_max = max(rss_max or 0, rss)
            if rss10 is None and now >= t0 + 10:
                rss10 = rss
            if now >= next_report:
                done = sum(c.ok["soak"] for c in clients)
                print(f"  t={now - t0:5.1f}s requests={done} rss={rss} KiB", flush=True)
                next_report += 10
            time.sleep(0.05)
        if not crashed:
            rss_end = h.rss_kib(kg.pid)
            metrics = http_get(admin, "/metrics").decode("utf-8", "replace")
        else:
            metrics = ""
        # ---- phase 2: drain under load
        probe: dict = {}
        exit_code = None
        drain_s = None
        if not crashed:
            prober = threading.Thread(target=listener_prober, args=(port, ctl, probe, hard_stop), daemon=True)
            prober.start()
            time.sleep(0.3)
            ctl.t_sigterm = time.monotonic()
            kg.send_signal(signal.SIGTERM)
            try:
                exit_code = kg.wait(25)
            except subprocess.TimeoutExpired:
                failures.append("keygate did not exit within 25 s of SIGTERM")
                kg.kill()
                kg.wait()
            drain_s = time.monotonic() - ctl.t_sigterm
            time.sleep(0.3)
            prober.join(2)
        ctl.stop.set()
        for c in clients:
            c.join(5)
        up_stats = json.loads(http_get(up_port, "/__stats") or b"{}")
        # Everything before SIGTERM belongs to the soak.
        soak_elapsed = (ctl.t_sigterm or time.monotonic()) - t0
        soak_requests = sum(c.ok["soak"] for c in clients) + sum(
            n for c in clients for (p, _), n in c.non2xx.items() if p == "soak")
        soak_non2xx = Counter()
        for c in clients:
            for (p, s), n in c.non2xx.items():
                if p == "soak":
                    soak_non2xx[s] += n
        soak_errors = [e for c in clients for e in c.soak_errors]

        # ---- figures
        last_ok = probe.get("last_ok")
        unanswered = [u for c in clients for u in c.unanswered]
        # On loopback a reset (RST without a FIN first) of a connection whose request was
        # fully written means keygate closed it with that request unread in its buffer: an
        # in-flight request thrown away. A plain EOF means keygate closed the connection
        # before the request reached it (the keep-alive race every HTTP/1.1 server has).
        resets = [u for u in unanswered if u[2] != "EOF"]
        eofs = [u for u in unanswered if u[2] == "EOF"]
        open_listener = [u for u in unanswered if last_ok is not None and u[0] < last_ok]
        truncated = [t for c in clients for t in c.truncated]
        corrupt = [t for c in clients for t in c.corrupt]
        drain_ok = sum(c.ok["drain"] for c in clients)
        drain_non2xx = Counter()
        for c in clients:
            for (p, s), n in c.non2xx.items():
                if p == "drain":
                    drain_non2xx[s] += n
        stderr_text = open(stderr_path, errors="replace").read()
        reload_ok = metric(metrics, "keygate_key_reloads_total", 'result="success"')
        reload_fail = metric(metrics, "keygate_key_reloads_total", 'result="failure"')
        internal = stderr_text.count("internal error")
        growth = (rss_end - rss10) / rss10 * 100 if rss10 and rss_end else None

        print("\n== soak ==")
        print(f"duration              {soak_elapsed:.1f} s")
        print(f"requests (K)          {soak_requests}  ({soak_requests / soak_elapsed:.0f}/s)")
        print(f"non-2xx for K         {sum(soak_non2xx.values())} {dict(soak_non2xx) or ''}")
        print(f"connection errors     {len(soak_errors)}")
        print(f"upstream requests     {up_stats.get('requests', 0)}  key leaks {up_stats.get('key_leaks', 0)}"
              f"  bad identity {up_stats.get('bad_identity', 0)}  bad bodies {up_stats.get('bad_request_body', 0)}")
        print(f"keys file rewrites    {version}  SIGHUPs sent {hups}  "
              f"SIGHUPs logged {stderr_text.count('SIGHUP received')}")
        print(f"reloads (metrics)     success {reload_ok}  failure {reload_fail}")
        print(f"crashes               {'YES' if crashed else 'none'}  internal errors logged {internal}")
        print(f"VmRSS at 10 s         {rss10} KiB")
        print(f"VmRSS at end          {rss_end} KiB  (max {rss_max} KiB)  growth "
              + (f"{growth:+.1f}%" if growth is not None else "n/a"))
        print(f"max latency           {max(c.max_latency for c in clients) * 1000:.0f} ms")
        print("\n== drain under load ==")
        print(f"exit code             {exit_code}  after {drain_s:.2f} s" if drain_s is not None else
              "exit code             n/a")
        if last_ok is not None and ctl.t_sigterm is not None:
            print(f"listener closed       {(last_ok - ctl.t_sigterm) * 1000:+.0f} .. "
                  + (f"{(probe['first_refused'] - ctl.t_sigterm) * 1000:+.0f} ms after SIGTERM"
                     if "first_refused" in probe else "(no refusal seen)"))
        print(f"responses in drain    {drain_ok} complete 2xx, non-2xx {dict(drain_non2xx) or 0}")
        print(f"truncated responses   {len(truncated)}")
        print(f"corrupt responses     {len(corrupt)}")
        print(f"unanswered after fully sent: reset      {len(resets)}  "
              f"(on keep-alive {sum(1 for u in resets if not u[1])}, on a fresh connection "
              f"{sum(1 for u in resets if u[1])})")
        print(f"unanswered after fully sent: EOF        {len(eofs)}  (closed before the request arrived)")
        print(f"  of all unanswered, sent before the listener's last accept: {len(open_listener)}")
        print(f"not sent (closed before fully written)  {sum(c.not_sent for c in clients)}")
        print(f"connects refused      {sum(c.refused for c in clients)}")

        # ---- verdict
        soak_fail: list[str] = list(failures)  # keygate died or hung
        drain_fail: list[str] = []
        if soak_requests == 0:
            soak_fail.append("no request completed during the soak")
        if soak_non2xx:
            soak_fail.append(f"non-2xx answers for K during the soak: {dict(soak_non2xx)}")
        if soak_errors:
            soak_fail.append(f"{len(soak_errors)} connection errors during the soak, e.g. {soak_errors[:3]}")
        if up_stats.get("key_leaks") or up_stats.get("bad_identity") or up_stats.get("bad_request_body"):
            soak_fail.append(f"upstream saw wrong requests: {up_stats}")
        if not reload_ok:
            soak_fail.append("no successful key reload was counted")
        if internal:
            soak_fail.append(f"{internal} internal errors in keygate's stderr")
        if growth is None:
            soak_fail.append("VmRSS not measured")
        elif growth >= 10:
            soak_fail.append(f"VmRSS grew {growth:.1f}% between the 10th second and the end")
        for phase, bucket in (("soak", soak_fail), ("drain", drain_fail)):
            t = [x for x in truncated if x.startswith(phase + ":")]
            k = [x for x in corrupt if x.startswith(phase + ":")]
            if t:
                bucket.append(f"{len(t)} truncated responses, e.g. {t[:3]}")
            if k:
                bucket.append(f"{len(k)} corrupt responses, e.g. {k[:3]}")
        if drain_non2xx:
            drain_fail.append(f"non-2xx answers during the drain: {dict(drain_non2xx)}")
        if resets:
            ex = [(f"sent {(u[0] - ctl.t_sigterm) * 1000:+.1f} ms after SIGTERM",
                   "fresh conn" if u[1] else "keep-alive", u[2]) for u in resets[:5]]
            drain_fail.append(f"{len(resets)} requests were reset after being fully sent (keygate closed "
                              f"with the request unread), e.g. {ex}")
        if not crashed and exit_code != 0:
            drain_fail.append(f"exit code after SIGTERM was {exit_code}, not 0")
        print(f"\nsoak phase:  {'FAIL' if soak_fail else 'PASS'}")
        print(f"drain phase: {'FAIL' if drain_fail else 'PASS'}")
        if soak_fail or drain_fail:
            print("\nSOAK FAILED:")
            for f in soak_fail + drain_fail:
                print(f"  - {f}")
            print("keygate stderr (last 10 lines):")
            for line in stderr_text.splitlines()[-10:]:
                print("  " + line)
            return 1
        print("\nSOAK PASSED")
        return 0
    finally:
        for p in (kg, up):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
