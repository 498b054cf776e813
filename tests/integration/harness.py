"""Shared helpers for keygate's black-box integration tests (DESIGN.md is the spec).

Everything listens on 127.0.0.1 with ports picked by the kernel (bind port 0), and every
temporary file lives under a tempfile.mkdtemp() directory that is removed afterwards, so
two test files can run in parallel.

What is here:
  * main()             - entry point of every test file: strips `--keygate PATH` from argv,
                         arms a watchdog and runs unittest.
  * free_port()        - a port nothing listens on right now.
  * new_key(), key_hash(), key_entry(), make_config(), to_yaml() - configs and keys.
  * Keygate            - context manager: writes the config, starts the binary, waits until
                         its listen port accepts, captures stdout/stderr, stops it.
  * Upstream           - a recording HTTP/1.1 origin built on raw sockets and threads. It
                         keeps the exact bytes it receives, parses them with strict framing
                         (Content-Length and chunked), and answers per path (see ROUTES).
  * Client             - a raw HTTP/1.1 client: send bytes, read one response (1xx, HEAD,
                         Content-Length, chunked, until-close), detect a closed connection.
  * rss_kib()          - VmRSS of a process from /proc/<pid>/status.
"""
from __future__ import annotations

import faulthandler
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from pathlib import Path
from urllib.parse import parse_qs

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BINARY = REPO_ROOT / "build" / "keygate"
_binary: str | None = None

# A whole test file must never hang: dump every thread's stack and exit after this long.
WATCHDOG_SECONDS = 170

WWW_AUTHENTICATE = 'ApiKey realm="keygate", header="X-API-Key"'
REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
EX_CONFIG = 78


# --------------------------------------------------------------------------- entry point

def keygate_binary() -> str:
    """Path of the keygate binary under test."""
    return _binary or str(DEFAULT_BINARY)


def main() -> None:
    """Runs the calling test file: `python3 test_x.py [--keygate PATH] [unittest args]`."""
    global _binary
    argv = [sys.argv[0]]
    args = sys.argv[1:]
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--keygate" and i + 1 < len(args):
            _binary = args[i + 1]
            i += 2
            continue
        if a.startswith("--keygate="):
            _binary = a.split("=", 1)[1]
            i += 1
            continue
        argv.append(a)
        i += 1
    if _binary is None:
        _binary = str(DEFAULT_BINARY)
    _binary = os.path.abspath(_binary)
    if not os.access(_binary, os.X_OK):
        print(f"keygate binary not found or not executable: {_binary}", file=sys.stderr)
        sys.exit(2)
    faulthandler.dump_traceback_later(WATCHDOG_SECONDS, exit=True)
    unittest.main(module="__main__", argv=argv, verbosity=2)


# --------------------------------------------------------------------------- ports, keys, config

_handed_out: set[int] = set()
_port_lock = threading.Lock()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (never the same one twice)."""
    with _port_lock:
        for _ in range(100):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            if port not in _handed_out:
                _handed_out.add(port)
                return port
    raise RuntimeError("no free port")


def new_key(length: int = 43) -> str:
    """A random plaintext key of `length` alphanumeric characters (printable, no space or comma)."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    return "".join(secrets.choice(alphabet) for _ in range(length))


def key_hash(key: str | bytes) -> str:
    """The `sha256:<hex>` form of a key."""
    if isinstance(key, str):
        key = key.encode()
    return "sha256:" + hashlib.sha256(key).hexdigest()


def key_entry(key_id: str, key: str | None = None, hash: str | None = None, **fields) -> dict:
    """One `auth.keys[]` entry; pass either the plaintext `key` or its `hash`."""
    entry: dict = {"id": key_id}
    if key is not None:
        entry["key"] = key
    if hash is not None:
        entry["hash"] = hash
    entry.update(fields)
    return entry


def deep_merge(base: dict, extra: dict) -> dict:
    """Merges `extra` into `base` recursively (dicts merge, everything else replaces)."""
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            deep_merge(base[k], v)
        else:
            base[k] = v
    return base


def make_config(upstream_port: int, keys=(), environment: str | None = "production",
                **overrides) -> dict:
    """A complete config for one test keygate: 127.0.0.1 listeners on fresh ports, one
    worker thread, the failed-attempt throttle off (many tests send invalid keys on
    purpose), short connect timeout. `overrides` are deep-merged section by section."""
    cfg: dict = {}
    if environment is not None:
        cfg["environment"] = environment
    cfg.update({
        "listen": {"address": "127.0.0.1", "port": free_port()},
        "upstream": {"url": f"http://127.0.0.1:{upstream_port}",
                     "connect_timeout": "2s", "response_timeout": "5s"},
        "admin": {"address": "127.0.0.1", "port": free_port()},
        "auth": {"keys": list(keys), "failed_attempts": {"max": 0}},
        "limits": {"header_timeout": "5s", "idle_timeout": "10s"},
        "threads": 1,
    })
    return deep_merge(cfg, overrides)


_PLAIN = re.compile(r"^[A-Za-z0-9/][A-Za-z0-9._/:+-]*$")
_NUMBERISH = re.compile(
    r"^([-+]?[0-9][0-9_]*|[-+]?(\.[0-9]+|[0-9][0-9_]*(\.[0-9_]*)?)([eE][-+]?[0-9]+)?|0x[0-9a-fA-F]+|0o[0-7]+|[-+]?\.(inf|Inf|INF)|\.(nan|NaN|NAN))$")
_RESERVED_WORDS = {"true", "false", "yes", "no", "on", "off", "null", "y", "n", "~"}


def _yaml_scalar(v) -> str:
    if v is True:
        return "true"
    if v is False:
        return "false"
    if v is None:
        return "null"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, dict):
        if v:
            raise ValueError("non-empty mapping is not a scalar")
        return "{}"
    if isinstance(v, (list, tuple)):
        if v:
            raise ValueError("non-empty sequence is not a scalar")
        return "[]"
    s = str(v)
    if (_PLAIN.match(s) and s.lower() not in _RESERVED_WORDS and not _NUMBERISH.match(s)
            and not re.match(r"^\d{4}-\d\d-\d\d$", s)) or re.match(
                r"^\d{4}-\d\d-\d\dT[0-9:.]+(Z|[+-]\d\d:\d\d)?$", s):
        return s
    return json.dumps(s)  # ASCII JSON string == YAML double-quoted scalar


def to_yaml(obj, indent: int = 0) -> str:
    """Block-style YAML for dicts/lists/scalars (plain scalars where safe, else quoted)."""
    pad = "  " * indent
    lines: list[str] = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(v, (dict, list, tuple)) and v:
                lines.append(f"{pad}{k}:")
                lines.append(to_yaml(v, indent + 1))
            else:
                lines.append(f"{pad}{k}: {_yaml_scalar(v)}")
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            if isinstance(item, dict) and item:
                sub = to_yaml(item, indent + 1).split("\n")
                lines.append(pad + "- " + sub[0].lstrip())
                lines.extend(sub[1:])
            elif isinstance(item, (list, tuple)) and item:
                lines.append(pad + "-")
                lines.append(to_yaml(item, indent + 1))
            else:
                lines.append(f"{pad}- {_yaml_scalar(item)}")
    else:
        lines.append(pad + _yaml_scalar(obj))
    return "\n".join(lines)


def clean_env(extra: dict | None = None) -> dict:
    """The process environment without any KEYGATE_* variable, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYGATE_")}
    if extra:
        env.update(extra)
    return env


# --------------------------------------------------------------------------- running keygate

class KeygateExited(AssertionError):
    """keygate exited while we waited for it to become ready."""


def wait_port(port: int, timeout: float, proc: subprocess.Popen | None = None) -> bool:
    """Polls connect() on 127.0.0.1:port until it succeeds (True) or `timeout` passes or
    `proc` exits (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.02)
    return False


def port_accepts(port: int) -> bool:
    """True when something accepts TCP connections on 127.0.0.1:port right now."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def run_cli(args, input: bytes | str | None = None, env: dict | None = None,
            timeout: float = 15, cwd: str | None = None) -> subprocess.CompletedProcess:
    """Runs `keygate <args>` to completion with a clean environment; bytes in, text out."""
    if isinstance(input, str):
        input = input.encode()
    p = subprocess.run([keygate_binary(), *args], input=input, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, env=clean_env(env), timeout=timeout, cwd=cwd)
    return subprocess.CompletedProcess(p.args, p.returncode,
                                       p.stdout.decode("utf-8", "replace"),
                                       p.stderr.decode("utf-8", "replace"))


class Keygate:
    """One keygate process. Use as a context manager:

        with Keygate(make_config(up.port, keys=[...])) as kg:
            Client(kg.port).request(...)

    `config` is a dict (rendered with to_yaml) or `config_text` a raw YAML string;
    `env` adds environment variables (KEYGATE_* from the caller's environment are dropped);
    `port` is the port to wait on (default: config's listen.port).
    """

    def __init__(self, config: dict | None = None, *, config_text: str | None = None,
                 env: dict | None = None, args=(), port: int | None = None,
                 ready_timeout: float = 5.0, use_config_flag: bool = True,
                 wait_ready: bool = True):
        self.config = config
        self.tmp = tempfile.mkdtemp(prefix="keygate-it-")
        self.config_path = os.path.join(self.tmp, "keygate.yaml")
        text = config_text if config_text is not None else to_yaml(config) + "\n"
        with open(self.config_path, "w") as f:
            f.write(text)
        self.env = dict(env or {})
        self.args = list(args)
        if port is None and config is not None:
            port = config["listen"]["port"]
        self.port = port
        self.ready_timeout = ready_timeout
        self.use_config_flag = use_config_flag
        self.wait_ready = wait_ready
        self.proc: subprocess.Popen | None = None
        self.stdout_path = os.path.join(self.tmp, "stdout.log")
        self.stderr_path = os.path.join(self.tmp, "stderr.log")
        self.returncode: int | None = None

    # -- lifecycle
    def __enter__(self) -> "Keygate":
        try:
            self.start()
        except BaseException:
            self.stop()
            self.cleanup()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
        self.cleanup()

    def start(self) -> None:
        argv = [keygate_binary()]
        if self.use_config_flag:
            argv += ["--config", self.config_path]
        argv += self.args
        out = open(self.stdout_path, "wb")
        err = open(self.stderr_path, "wb")
        try:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                         env=clean_env(self.env), cwd=self.tmp)
        finally:
            out.close()
            err.close()
        if not self.wait_ready or self.port is None:
            return
        if not wait_port(self.port, self.ready_timeout, self.proc):
            code = self.proc.poll()
            raise KeygateExited(
                f"keygate did not become ready on port {self.port} (exit code {code});\n"
                f"stderr:\n{self.stderr()}\nstdout:\n{self.stdout()}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, grace: float = 5.0) -> int | None:
        """Sends `sig`, waits `grace` seconds, then SIGKILL. Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(sig)
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.returncode = self.proc.returncode
        return self.returncode

    def cleanup(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

    # -- output
    def stdout(self) -> str:
        try:
            with open(self.stdout_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def stderr(self) -> str:
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def access_log(self) -> list[dict]:
        """Every stdout line that is a JSON object."""
        entries = []
        for line in self.stdout().splitlines():
            line = line.strip()
            if not line.startswith("{"):
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict):
                entries.append(obj)
        return entries

    def find_log(self, request_id: str, timeout: float = 3.0) -> dict | None:
        """The access-log entry whose request_id is `request_id` (waits up to `timeout`)."""
        deadline = time.monotonic() + timeout
        while True:
            for e in self.access_log():
                if e.get("request_id") == request_id:
                    return e
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.05)


# --------------------------------------------------------------------------- buffered socket

class Closed(Exception):
    """The peer closed the connection (FIN or RST) before the expected bytes arrived."""


class BufferedSocket:
    """A socket with a read buffer and deadline-based reads. Every received byte is also
    passed to `on_data` (used by the upstream to record raw bytes)."""

    def __init__(self, sock: socket.socket, on_data=None):
        self.sock = sock
        self.buf = bytearray()
        self.eof = False
        self.reset = False
        self.on_data = on_data

    def fill(self, deadline: float | None, size: int = 262144) -> bool:
        """Reads more bytes into the buffer. False on EOF/reset; raises socket.timeout."""
        if self.eof:
            return False
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise socket.timeout("deadline passed")
            self.sock.settimeout(remaining)
        else:
            self.sock.settimeout(None)
        try:
            data = self.sock.recv(size)
        except (ConnectionResetError, BrokenPipeError):
            self.eof = True
            self.reset = True
            return False
        except OSError as e:
            if isinstance(e, socket.timeout):
                raise
            self.eof = True
            self.reset = True
            return False
        if not data:
            self.eof = True
            return False
        if self.on_data is not None:
            self.on_data(data)
        self.buf += data
        return True

    def read_until(self, delim: bytes, deadline: float | None, limit: int | None = None) -> bytes:
        start = 0
        while True:
            i = self.buf.find(delim, start)
            if i >= 0:
                out = bytes(self.buf[: i + len(delim)])
                del self.buf[: i + len(delim)]
                return out
            if limit is not None and len(self.buf) > limit:
                raise ValueError("line or head too long")
            start = max(0, len(self.buf) - len(delim) + 1)
            if not self.fill(deadline):
                raise Closed(f"closed while waiting for {delim!r}; have {bytes(self.buf[:200])!r}")

    def read_exact(self, n: int, deadline: float | None) -> bytes:
        while len(self.buf) < n:
            if not self.fill(deadline):
                raise Closed(f"closed after {len(self.buf)} of {n} bytes")
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def read_some(self, deadline: float | None, max_bytes: int = 262144) -> bytes:
        """At least one byte (b'' on EOF)."""
        if not self.buf and not self.fill(deadline, max_bytes):
            return b""
        out = bytes(self.buf[:max_bytes])
        del self.buf[:max_bytes]
        return out

    def read_to_eof(self, deadline: float | None) -> bytes:
        while self.fill(deadline):
            pass
        out = bytes(self.buf)
        self.buf.clear()
        return out


def _parse_fields(lines: list[bytes]) -> list[tuple[str, str]]:
    fields = []
    for line in lines:
        name, sep, value = line.partition(b":")
        if not sep:
            raise ValueError(f"header line without colon: {line!r}")
        fields.append((name.decode("latin-1"), value.strip(b" \t").decode("latin-1")))
    return fields


class _Headers:
    """Mixin: case-insensitive access to a `headers` list of (name, value)."""
    headers: list[tuple[str, str]]

    def header(self, name: str) -> str | None:
        """The first value of `name` (case-insensitive), or None."""
        for n, v in self.headers:
            if n.lower() == name.lower():
                return v
        return None

    def header_all(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n.lower() == name.lower()]

    def has(self, name: str) -> bool:
        return any(n.lower() == name.lower() for n, _ in self.headers)

    def names_with_prefix(self, prefix: str) -> list[str]:
        return [n for n, _ in self.headers if n.lower().startswith(prefix.lower())]

    def connection_tokens(self) -> set[str]:
        toks = set()
        for v in self.header_all("Connection"):
            toks.update(t.strip().lower() for t in v.split(",") if t.strip())
        return toks


# --------------------------------------------------------------------------- raw client

class Response(_Headers):
    def __init__(self, version: str, status: int, reason: str, headers, head: bytes):
        self.version = version
        self.status = status
        self.reason = reason
        self.headers = headers
        self.head = head
        self.body = b""
        self.trailers: list[tuple[str, str]] = []
        self.raw = head  # head + body bytes exactly as received
        self.complete = True  # False when the body was cut short by a close

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def has_close(self) -> bool:
        return "close" in self.connection_tokens()

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason} {self.headers} body={self.body[:300]!r}>"


class Client:
    """A raw HTTP/1.1 client connection to 127.0.0.1:port."""

    def __init__(self, port: int, timeout: float = 5.0, rcvbuf: int | None = None):
        self.port = port
        self.timeout = timeout
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.settimeout(timeout)
        s.connect(("127.0.0.1", port))
        self.sock = s
        self.bs = BufferedSocket(s)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, data: bytes) -> None:
        self.sock.settimeout(self.timeout)
        self.sock.sendall(data)

    def try_send(self, data: bytes) -> bool:
        """Sends, returning False instead of raising when the peer has gone."""
        try:
            self.send(data)
            return True
        except OSError:
            return False

    def read_head(self, method: str = "GET", timeout: float | None = None) -> Response:
        """Reads one response head (1xx included). Raises Closed, socket.timeout."""
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        head = self.bs.read_until(b"\r\n\r\n", deadline, limit=1 << 20)
        lines = head[:-4].split(b"\r\n")
        m = re.match(rb"^(HTTP/\d\.\d) (\d{3}) ?(.*)$", lines[0])
        if not m:
            raise ValueError(f"bad status line {lines[0]!r}")
        resp = Response(m.group(1).decode(), int(m.group(2)), m.group(3).decode("latin-1"),
                        _parse_fields(lines[1:]), head)
        resp.request_method = method
        return resp

    def read_body(self, resp: Response, timeout: float | None = None) -> Response:
        """Reads the body of `resp` (framing by status, method, Transfer-Encoding,
        Content-Length, else until close). A cut-short body sets resp.complete = False."""
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        raw = bytearray(resp.head)
        body = bytearray()
        method = getattr(resp, "request_method", "GET")
        try:
            if 100 <= resp.status < 200 or resp.status in (204, 304) or method == "HEAD":
                pass
            elif resp.header("Transfer-Encoding") is not None:
                if resp.header("Transfer-Encoding").lower() != "chunked":
                    raise ValueError(f"unexpected Transfer-Encoding {resp.header('Transfer-Encoding')}")
                while True:
                    line = self.bs.read_until(b"\r\n", deadline, limit=4096)
                    raw += line
                    size = int(line[:-2].split(b";")[0], 16)
                    if size == 0:
                        break
                    chunk = self.bs.read_exact(size + 2, deadline)
                    raw += chunk
                    body += chunk[:-2]
                trailer_lines = []
                while True:
                    line = self.bs.read_until(b"\r\n", deadline, limit=65536)
                    raw += line
                    if line == b"\r\n":
                        break
                    trailer_lines.append(line[:-2])
                resp.trailers = _parse_fields(trailer_lines)
            elif resp.header("Content-Length") is not None:
                n = int(resp.header("Content-Length"))
                while len(body) < n:
                    part = self.bs.read_some(deadline, min(n - len(body), 1 << 20))
                    if not part:
                        raise Closed("closed inside a Content-Length body")
                    body += part
                    raw += part
            else:
                rest = self.bs.read_to_eof(deadline)
                body += rest
                raw += rest
        except Closed:
            resp.complete = False
            rest = bytes(self.bs.buf)
            self.bs.buf.clear()
            body += rest
            raw += rest
        resp.body = bytes(body)
        resp.raw = bytes(raw)
        return resp

    def read_response(self, method: str = "GET", timeout: float | None = None) -> Response:
        """Reads one full response (a 1xx is returned on its own, without a body)."""
        t0 = time.monotonic()
        resp = self.read_head(method, timeout)
        remaining = None if timeout is None else max(0.1, timeout - (time.monotonic() - t0))
        return self.read_body(resp, remaining)

    def request(self, method: str = "GET", target: str = "/", headers=None, body: bytes = b"",
                timeout: float | None = None, **kw) -> Response:
        """Sends one request built by build_request and reads its final response."""
        self.send(build_request(method, target, headers, body, **kw))
        while True:
            resp = self.read_response(method, timeout)
            if not (100 <= resp.status < 200):
                return resp

    def wait_closed(self, timeout: float = 3.0) -> bool:
        """True when the server closes (FIN or RST) within `timeout`; bytes that arrive
        meanwhile are kept in self.bs.buf (see pending())."""
        deadline = time.monotonic() + timeout
        try:
            while self.bs.fill(deadline):
                pass
            return True
        except socket.timeout:
            return False

    def pending(self) -> bytes:
        return bytes(self.bs.buf)


def build_request(method: str = "GET", target: str = "/", headers=None, body: bytes = b"",
                  host: str | None = "test.local", version: str = "HTTP/1.1",
                  content_length: bool = True) -> bytes:
    """A raw request. `headers` is a list of (name, value) or a dict; Host comes first
    (unless host=None) and Content-Length is added for a non-empty body unless the
    headers already frame it or content_length=False."""
    if headers is None:
        headers = []
    elif isinstance(headers, dict):
        headers = list(headers.items())
    lines = [f"{method} {target} {version}"]
    if host is not None:
        lines.append(f"Host: {host}")
    names = {n.lower() for n, _ in headers}
    for n, v in headers:
        lines.append(f"{n}: {v}")
    if body and content_length and "content-length" not in names and "transfer-encoding" not in names:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def chunked_body(parts, trailers: bytes = b"") -> bytes:
    """Encodes `parts` (an iterable of bytes) as a chunked body with the given raw trailer
    lines (each ending in CRLF)."""
    out = bytearray()
    for p in parts:
        if p:
            out += b"%x\r\n" % len(p) + p + b"\r\n"
    out += b"0\r\n" + trailers + b"\r\n"
    return bytes(out)


def strip_volatile(raw: bytes) -> bytes:
    """A response's raw bytes without its Date and X-Request-Id header lines."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    lines = [l for l in head.split(b"\r\n")
             if not l.lower().startswith((b"date:", b"x-request-id:"))]
    return b"\r\n".join(lines) + sep + body


def unique_id(prefix: str = "it") -> str:
    """A fresh valid X-Request-Id value."""
    return f"{prefix}-{secrets.token_hex(8)}"


# --------------------------------------------------------------------------- recording upstream

class UpstreamRequest(_Headers):
    """One request as the recording upstream received it."""

    def __init__(self, conn_id: int, seq: int):
        self.conn_id = conn_id
        self.seq = seq  # index of this request on its connection
        self.method = ""
        self.target = ""
        self.version = ""
        self.headers: list[tuple[str, str]] = []
        self.raw_head = b""
        self.body = bytearray()
        self.body_len = 0
        self._sha = hashlib.sha256()
        self.chunked = False
        self.chunk_sizes: list[int] = []
        self.chunk_extensions: list[bytes] = []
        self.trailers: list[tuple[str, str]] = []
        self.complete = False  # the whole body (if any) arrived

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    @property
    def query(self) -> dict:
        return parse_qs(self.target.split("?", 1)[1]) if "?" in self.target else {}

    def q(self, name: str, default=None):
        v = self.query.get(name)
        return v[0] if v else default

    @property
    def body_sha256(self) -> str:
        return self._sha.hexdigest()

    def _add_body(self, data: bytes, keep: bool) -> None:
        self.body_len += len(data)
        self._sha.update(data)
        if keep:
            self.body += data

    def __repr__(self) -> str:
        return (f"<UpstreamRequest conn={self.conn_id} {self.method} {self.target} "
                f"{self.headers} body_len={self.body_len} complete={self.complete}>")


class UpstreamConn:
    """One accepted connection of the recording upstream."""

    def __init__(self, upstream: "Upstream", sock: socket.socket, conn_id: int):
        self.upstream = upstream
        self.sock = sock
        self.id = conn_id
        self.raw = bytearray()
        self.seq = 0
        self.bs = BufferedSocket(sock, on_data=self._record)

    def _record(self, data: bytes) -> None:
        with self.upstream.lock:
            self.upstream.bytes_received += len(data)
            if len(self.raw) < self.upstream.raw_limit:
                self.raw += data[: self.upstream.raw_limit - len(self.raw)]

    def send(self, data: bytes) -> bool:
        try:
            self.sock.settimeout(30)
            self.sock.sendall(data)
            return True
        except OSError:
            return False

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def reset(self) -> None:
        """Closes with an RST (SO_LINGER 0)."""
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.close()

    def respond(self, status: int = 200, body: bytes = b"", headers=None, reason: str | None = None,
                content_type: str = "application/json", head_only: bool = False) -> bool:
        reason = reason or {200: "OK", 201: "Created", 204: "No Content", 304: "Not Modified",
                            403: "Forbidden", 404: "Not Found", 500: "Internal Server Error"}.get(status, "Status")
        lines = [f"HTTP/1.1 {status} {reason}"]
        hdrs = list(headers or [])
        names = {n.lower() for n, _ in hdrs}
        if content_type and "content-type" not in names and status not in (204, 304):
            lines.append(f"Content-Type: {content_type}")
        if status not in (204, 304) and "content-length" not in names and "transfer-encoding" not in names:
            lines.append(f"Content-Length: {len(body)}")
        lines.append(f"X-Upstream-Conn: {self.id}")
        lines += [f"{n}: {v}" for n, v in hdrs]
        data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        if not head_only:
            data += body
        return self.send(data)


class UpstreamError(Exception):
    pass


def _info_body(req: UpstreamRequest) -> bytes:
    return json.dumps({"method": req.method, "target": req.target, "headers": req.headers,
                       "body_len": req.body_len, "body_sha256": req.body_sha256,
                       "conn": req.conn_id, "seq": req.seq}).encode()


# Built-in behaviours, chosen by the first path segment ("/big/x" uses "/big").
# Each gets (upstream, conn, req) after the whole request body was read and returns
# True to keep the connection open for the next request, False to close it.
def _route_default(up, conn, req):
    return conn.respond(200, _info_body(req), head_only=req.method == "HEAD")


def _route_echo(up, conn, req):
    return conn.respond(200, bytes(req.body), content_type="application/octet-stream",
                        head_only=req.method == "HEAD")


def _route_slow(up, conn, req):
    """Answers after ?ms= milliseconds (default 2000)."""
    up.stopping.wait(int(req.q("ms", "2000")) / 1000)
    return conn.respond(200, _info_body(req))


def pattern_block() -> bytes:
    """The 64 KiB block /big repeats (for computing expected digests)."""
    return bytes(range(256)) * 256


def big_digest(nbytes: int) -> str:
    """sha256 of the first `nbytes` of /big's repeated pattern."""
    block = pattern_block()
    h = hashlib.sha256()
    full, rest = divmod(nbytes, len(block))
    for _ in range(full):
        h.update(block)
    h.update(block[:rest])
    return h.hexdigest()


def _route_big(up, conn, req):
    """Streams ?mib= MiB (or ?bytes=) of pattern_block(); ?chunked=1 for chunked framing."""
    nbytes = int(req.q("bytes", "0")) or int(req.q("mib", "1")) * 1024 * 1024
    chunked = req.q("chunked") == "1"
    block = pattern_block()
    framing = [("Transfer-Encoding", "chunked")] if chunked else [("Content-Length", str(nbytes))]
    if not conn.respond(200, b"", headers=framing, content_type="application/octet-stream"):
        return False
    sent = 0
    while sent < nbytes:
        part = block[: min(len(block), nbytes - sent)]
        data = (b"%x\r\n" % len(part) + part + b"\r\n") if chunked else part
        if not conn.send(data):
            return False
        sent += len(part)
    if chunked and not conn.send(b"0\r\n\r\n"):
        return False
    return True


def _route_close(up, conn, req):
    """Closes (FIN) without answering."""
    return False


def _route_reset(up, conn, req):
    """Resets (RST) without answering."""
    conn.reset()
    return False


def _route_hang(up, conn, req):
    """Never answers (until the upstream stops or ?ms= passes)."""
    ms = req.q("ms")
    up.stopping.wait(int(ms) / 1000 if ms else 120)
    return False


def _route_stale(up, conn, req):
    """Answers like a keep-alive server (no Connection: close) and then closes."""
    conn.respond(200, _info_body(req))
    time.sleep(0.05)
    return False


def _route_oneshot(up, conn, req):
    """Answers the first request on a connection; on a later request on the same
    connection, closes without a single response byte (a pooled connection gone stale)."""
    if req.seq == 0:
        return conn.respond(200, _info_body(req))
    return False


def _route_hop(up, conn, req):
    """A response carrying hop-by-hop headers and its own X-Request-Id."""
    return conn.respond(200, _info_body(req), headers=[
        ("Connection", "X-Up-Private"), ("X-Up-Private", "secret"),
        ("Keep-Alive", "timeout=5"), ("Proxy-Connection", "keep-alive"),
        ("Upgrade", "foo/1"), ("Trailer", "X-T"), ("X-Request-Id", "from-upstream"),
        ("X-Up-Public", "visible")])


def _route_early_hints(up, conn, req):
    """Sends a 103 interim response, then the 200."""
    if not conn.send(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"):
        return False
    time.sleep(0.05)
    return conn.respond(200, _info_body(req))


def _route_truncate(up, conn, req):
    """Promises Content-Length: 100000, sends 1000 bytes, closes."""
    conn.respond(200, b"x" * 1000, headers=[("Content-Length", "100000")],
                 content_type="application/octet-stream")
    time.sleep(0.1)
    return False


def _route_truncchunk(up, conn, req):
    """Starts a chunked response, sends two chunks, closes without the final chunk."""
    conn.respond(200, b"", headers=[("Transfer-Encoding", "chunked")],
                 content_type="application/octet-stream")
    conn.send(b"5\r\nhello\r\n6\r\n world\r\n")
    time.sleep(0.1)
    return False


def _route_status(up, conn, req):
    """Answers ?code= with no body (for 204/304) or a small one."""
    code = int(req.q("code", "200"))
    return conn.respond(code, b"" if code in (204, 304) else b"{}",
                        head_only=req.method == "HEAD")


def _route_eof(up, conn, req):
    """A close-delimited response: no Content-Length, no Transfer-Encoding, then close."""
    conn.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n" + b"e" * 70000)
    return False


def _route_badframing(up, conn, req):
    """A response whose framing is ambiguous (two different Content-Length values)."""
    conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 50\r\n\r\nhello" + b"x" * 45)
    return False


def _route_connclose(up, conn, req):
    """Answers with Connection: close and closes."""
    conn.respond(200, _info_body(req), headers=[("Connection", "close")])
    return False


def _route_ws(up, conn, req):
    """A WebSocket-ish endpoint: answers 101 and then echoes raw bytes, upper-cased."""
    if req.header("Upgrade") is None:
        return conn.respond(400, b"{}")
    conn.send(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              b"Sec-WebSocket-Accept: dummy\r\n\r\n")
    data = bytes(conn.bs.buf)
    conn.bs.buf.clear()
    if data:
        conn.send(data.upper())
    while not up.stopping.is_set():
        try:
            chunk = conn.bs.read_some(time.monotonic() + 10)
        except socket.timeout:
            break
        if not chunk:
            break
        conn.send(chunk.upper())
    return False


# Early routes get (upstream, conn, req) right after the head, before any body byte is read.
def _route_early(up, conn, req):
    """Answers 403 with Connection: close before reading the body, then drains and closes."""
    conn.respond(403, b'{"upstream":"early"}', headers=[("Connection", "close")])
    try:
        conn.sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    deadline = time.monotonic() + 2
    try:
        while conn.bs.fill(deadline):
            conn.bs.buf.clear()
    except socket.timeout:
        pass
    return False


ROUTES = {
    "/echo": _route_echo, "/slow": _route_slow, "/big": _route_big, "/close": _route_close,
    "/reset": _route_reset, "/hang": _route_hang, "/stale": _route_stale,
    "/oneshot": _route_oneshot, "/hop": _route_hop, "/early-hints": _route_early_hints,
    "/truncate": _route_truncate, "/truncchunk": _route_truncchunk, "/status": _route_status,
    "/connclose": _route_connclose, "/ws": _route_ws, "/eof": _route_eof,
    "/badframing": _route_badframing,
}
EARLY_ROUTES = {"/early": _route_early, "/reset-early": _route_reset,
                "/hang-early": _route_hang}


class Upstream:
    """A recording HTTP/1.1 origin server on 127.0.0.1 (raw sockets, one thread per
    connection). Attributes for tests (read them under no lock; they only grow):
      heads     - every request whose head arrived, in arrival order (UpstreamRequest)
      requests  - the complete ones (property)
      errors    - framing violations found in what keygate sent (should stay empty)
      accepted  - number of TCP connections accepted
    `keep_body_limit` bounds how much of each body is kept in memory (digest and length
    are always computed)."""

    def __init__(self, routes: dict | None = None, raw_limit: int = 4 << 20,
                 keep_body_limit: int = 16 << 20):
        self.routes = dict(ROUTES)
        self.early_routes = dict(EARLY_ROUTES)
        if routes:
            self.routes.update(routes)
        self.raw_limit = raw_limit
        self.keep_body_limit = keep_body_limit
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.stopping = threading.Event()
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(128)
        self.port = self.listener.getsockname()[1]
        self.conns: list[UpstreamConn] = []
        self.heads: list[UpstreamRequest] = []
        self.errors: list[str] = []
        self.accepted = 0
        self.bytes_received = 0
        self._threads: list[threading.Thread] = []
        self._accept_thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._accept_thread.start()

    # -- lifecycle
    def __enter__(self) -> "Upstream":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self.stopping.set()
        try:
            self.listener.close()
        except OSError:
            pass
        with self.lock:
            conns = list(self.conns)
        for c in conns:
            try:
                c.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()
        self._accept_thread.join(2)

    def reset(self) -> None:
        """Forgets everything recorded so far (connections stay open)."""
        with self.lock:
            self.heads = []
            self.errors = []
            self.accepted = 0
            self.bytes_received = 0
            for c in self.conns:
                c.raw = bytearray()

    # -- queries
    @property
    def requests(self) -> list[UpstreamRequest]:
        with self.lock:
            return [r for r in self.heads if r.complete]

    def raw_bytes(self) -> bytes:
        """Everything received since the last reset, all connections concatenated."""
        with self.lock:
            return b"".join(bytes(c.raw) for c in self.conns)

    def wait_requests(self, n: int, timeout: float = 5.0) -> list[UpstreamRequest]:
        """Waits until at least `n` complete requests were recorded; returns them all."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while sum(1 for r in self.heads if r.complete) < n:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self.cond.wait(remaining)
            return [r for r in self.heads if r.complete]

    def wait_heads(self, n: int, timeout: float = 5.0) -> list[UpstreamRequest]:
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.heads) < n:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self.cond.wait(remaining)
            return list(self.heads)

    # -- serving
    def _accept_loop(self) -> None:
        self.listener.settimeout(0.2)
        next_id = 0
        while not self.stopping.is_set():
            try:
                sock, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = UpstreamConn(self, sock, next_id)
            next_id += 1
            with self.lock:
                self.accepted += 1
                self.conns.append(conn)
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            t.start()

    def _error(self, conn: UpstreamConn, msg: str) -> None:
        with self.cond:
            self.errors.append(f"conn {conn.id}: {msg}")
            self.cond.notify_all()

    def _route_for(self, table: dict, path: str):
        if path in table:
            return table[path]
        first = "/" + path.lstrip("/").split("/", 1)[0]
        return table.get(first)

    def _serve(self, conn: UpstreamConn) -> None:
        try:
            while not self.stopping.is_set():
                deadline = time.monotonic() + 60
                # Wait for the first byte of the next request; EOF here is a clean close.
                try:
                    if not conn.bs.buf and not conn.bs.fill(deadline):
                        return
                except socket.timeout:
                    return
                req = UpstreamRequest(conn.id, conn.seq)
                conn.seq += 1
                try:
                    head = conn.bs.read_until(b"\r\n\r\n", deadline, limit=1 << 20)
                except Closed:
                    self._error(conn, f"connection closed inside a request head: {bytes(conn.bs.buf[:200])!r}")
                    return
                except ValueError:
                    self._error(conn, "request head over 1 MiB")
                    return
                if not self._parse_head(conn, req, head):
                    return
                with self.cond:
                    self.heads.append(req)
                    self.cond.notify_all()
                early = self._route_for(self.early_routes, req.path)
                if early is not None:
                    early(self, conn, req)
                    return
                try:
                    ok = self._read_body(conn, req, deadline)
                except (Closed, socket.timeout):
                    return  # incomplete body: keygate gave up on this request
                if not ok:
                    return
                with self.cond:
                    req.complete = True
                    self.cond.notify_all()
                route = self._route_for(self.routes, req.path) or _route_default
                keep = route(self, conn, req)
                if not keep:
                    return
                if "close" in req.connection_tokens():
                    return
                if req.version == "HTTP/1.0" and "keep-alive" not in req.connection_tokens():
                    return
        except Exception as e:  # a harness bug must be visible
            self._error(conn, f"upstream exception: {e!r}")
        finally:
            conn.close()

    def _parse_head(self, conn: UpstreamConn, req: UpstreamRequest, head: bytes) -> bool:
        req.raw_head = head
        body = head[:-4]
        if re.search(rb"(?<!\r)\n", head) or re.search(rb"\r(?!\n)", head):
            self._error(conn, f"bare CR or LF in request head: {head[:300]!r}")
            return False
        lines = body.split(b"\r\n")
        m = re.match(rb"^([!#$%&'*+.^_`|~0-9A-Za-z-]+) (\S+) (HTTP/1\.[01])$", lines[0])
        if not m:
            self._error(conn, f"bad request line {lines[0]!r}")
            return False
        req.method, req.target, req.version = (g.decode("latin-1") for g in m.groups())
        for line in lines[1:]:
            if line[:1] in (b" ", b"\t"):
                self._error(conn, f"obs-fold line {line!r}")
                return False
            name, sep, value = line.partition(b":")
            if not sep or not re.match(rb"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$", name):
                self._error(conn, f"bad header line {line!r}")
                return False
            if re.search(rb"[\x00-\x08\x0a-\x1f\x7f]", value):
                self._error(conn, f"control byte in header value {line!r}")
                return False
            req.headers.append((name.decode("latin-1"), value.strip(b" \t").decode("latin-1")))
        hosts = req.header_all("Host")
        if req.version == "HTTP/1.1" and len(hosts) != 1:
            self._error(conn, f"{len(hosts)} Host fields")
            return False
        te = req.header_all("Transfer-Encoding")
        cl = req.header_all("Content-Length")
        if te and cl:
            self._error(conn, "both Transfer-Encoding and Content-Length")
            return False
        if te:
            if len(te) != 1 or te[0].lower() != "chunked":
                self._error(conn, f"Transfer-Encoding {te!r}")
                return False
            req.chunked = True
        if cl:
            if len(cl) != 1 or not re.match(r"^[0-9]{1,18}$", cl[0]):
                self._error(conn, f"Content-Length {cl!r}")
                return False
        return True

    def _read_body(self, conn: UpstreamConn, req: UpstreamRequest, deadline: float) -> bool:
        bs = conn.bs
        keep = lambda: req.body_len < self.keep_body_limit  # noqa: E731
        if req.chunked:
            while True:
                line = bs.read_until(b"\r\n", deadline, limit=4096)[:-2]
                size_txt, _, ext = line.partition(b";")
                if ext:
                    req.chunk_extensions.append(ext)
                if not re.match(rb"^[0-9A-Fa-f]{1,16}$", size_txt):
                    self._error(conn, f"bad chunk-size line {line!r}")
                    return False
                size = int(size_txt, 16)
                if size == 0:
                    break
                req.chunk_sizes.append(size)
                remaining = size
                while remaining:
                    part = bs.read_some(deadline, min(remaining, 1 << 20))
                    if not part:
                        raise Closed("closed inside a chunk")
                    req._add_body(part, keep())
                    remaining -= len(part)
                if bs.read_exact(2, deadline) != b"\r\n":
                    self._error(conn, "chunk data not followed by CRLF")
                    return False
            trailer_lines = []
            while True:
                line = bs.read_until(b"\r\n", deadline, limit=1 << 20)
                if line == b"\r\n":
                    break
                trailer_lines.append(line[:-2])
            req.trailers = _parse_fields(trailer_lines)
            return True
        cl = req.header("Content-Length")
        remaining = int(cl) if cl is not None else 0
        while remaining:
            part = bs.read_some(deadline, min(remaining, 1 << 20))
            if not part:
                raise Closed("closed inside a Content-Length body")
            req._add_body(part, keep())
            remaining -= len(part)
        return True


# --------------------------------------------------------------------------- process memory

def rss_kib(pid: int) -> int:
    """VmRSS of `pid` in KiB (from /proc/<pid>/status)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


# --------------------------------------------------------------------------- test base

class KeygateTestCase(unittest.TestCase):
    """Common assertions for keygate responses."""

    def assertError(self, resp: Response, status: int, code: str, close: bool | None = None) -> None:
        """`resp` is keygate's own JSON error: status, Content-Type, {"error","message"},
        an X-Request-Id; with close=True it says `Connection: close`, with close=False not."""
        self.assertEqual(resp.status, status, f"expected {status} {code}, got {resp!r}")
        ctype = resp.header("Content-Type") or ""
        self.assertTrue(ctype.lower().startswith("application/json"), f"Content-Type {ctype!r}")
        try:
            doc = resp.json()
        except ValueError:
            self.fail(f"error body is not JSON: {resp.body!r}")
        self.assertIsInstance(doc, dict)
        self.assertEqual(doc.get("error"), code, f"body {doc!r}")
        self.assertIsInstance(doc.get("message"), str)
        self.assertTrue(doc["message"], "empty message")
        self.assertEqual(set(doc), {"error", "message"}, f"unexpected fields in {doc!r}")
        rid = resp.header_all("X-Request-Id")
        self.assertEqual(len(rid), 1, f"X-Request-Id fields: {rid!r}")
        self.assertRegex(rid[0], REQUEST_ID_RE)
        if close is True:
            self.assertTrue(resp.has_close(), f"expected Connection: close in {resp.headers!r}")
        elif close is False:
            self.assertFalse(resp.has_close(), f"unexpected Connection: close in {resp.headers!r}")

    def assertClosed(self, client: Client, timeout: float = 3.5) -> None:
        """The server closes `client`'s connection within `timeout` (keygate may linger up
        to 2 s discarding input) without sending anything more."""
        self.assertTrue(client.wait_closed(timeout), "connection still open")
        self.assertEqual(client.pending(), b"", "unexpected bytes after the response")

    # -- fixtures shared by a whole test class
    @classmethod
    def start_upstream(cls, **kw) -> Upstream:
        up = Upstream(**kw)
        cls.addClassCleanup(up.stop)
        return up

    @classmethod
    def start_keygate(cls, config: dict | None = None, **kw) -> Keygate:
        kg = Keygate(config, **kw)
        kg.__enter__()
        cls.addClassCleanup(kg.__exit__, None, None, None)
        return kg

    def req(self, method: str = "GET", target: str = "/", headers=None, body: bytes = b"",
            port: int | None = None, timeout: float = 5.0, **kw) -> Response:
        """One request on a fresh connection to self.kg (or `port`); the final response."""
        with Client(port or self.kg.port, timeout=timeout) as c:
            return c.request(method, target, headers, body, timeout=timeout, **kw)

    def assertNothingForwarded(self, settle: float = 0.1) -> None:
        """The recording upstream self.up received no request byte (since its reset)."""
        time.sleep(settle)
        self.assertEqual(self.up.heads, [], "upstream received a request")
        self.assertEqual(self.up.raw_bytes(), b"", "upstream received bytes")

    def assertUpstreamClean(self) -> None:
        """What keygate sent upstream had no framing violations."""
        self.assertEqual(self.up.errors, [], "framing errors in what keygate forwarded")
