#!/usr/bin/env python3
"""Bodies are streamed both ways, never buffered whole; body limits (DESIGN.md §1.1, §1.9)."""
import hashlib
import os
import random
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

MiB = 1024 * 1024
MAX_BODY = 6 * MiB


class RssSampler(threading.Thread):
    """Samples a process's VmRSS every 20 ms until stopped."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid = pid
        self.samples: list[int] = []
        self.done = threading.Event()

    def run(self):
        while not self.done.is_set():
            try:
                self.samples.append(h.rss_kib(self.pid))
            except (OSError, RuntimeError):
                return
            self.done.wait(0.02)

    def stop(self) -> int:
        self.done.set()
        self.join(2)
        return max(self.samples) if self.samples else 0


class StreamingTest(h.KeygateTestCase):

    @classmethod
    def setUpClass(cls):
        cls.up = cls.start_upstream(keep_body_limit=0)
        cls.key = h.new_key()
        cls.kg = cls.start_keygate(h.make_config(cls.up.port, keys=[h.key_entry("alpha", key=cls.key)],
                                                 upstream={"response_timeout": "20s"},
                                                 limits={"max_body_bytes": MAX_BODY}))

    def setUp(self):
        self.up.reset()

    def tearDown(self):
        self.assertUpstreamClean()

    def K(self):
        return ("X-API-Key", self.key)

    # ----------------------------------------------------------------- downloads

    def download(self, target: str, nbytes: int, bytes_per_second: float):
        """Reads `target` at about `bytes_per_second`, sampling keygate's RSS meanwhile.
        Returns (response head, sha256 of the decoded body, body length, peak RSS in KiB)."""
        sampler = RssSampler(self.kg.pid)
        sampler.start()
        digest = hashlib.sha256()
        total = 0
        with h.Client(self.kg.port, timeout=20, rcvbuf=65536) as c:
            c.send(h.build_request("GET", target, [self.K()]))
            head = c.read_head(timeout=10)
            self.assertEqual(head.status, 200, head)
            # Read the raw (possibly chunked) body slowly, then decode it.
            chunked = (head.header("Transfer-Encoding") or "").lower() == "chunked"
            start = time.monotonic()
            deadline = start + 40
            raw_parts = bytearray()
            decoder = ChunkDecoder() if chunked else None
            while True:
                data = c.bs.read_some(deadline, 65536)
                if not data:
                    break
                if decoder is not None:
                    out = decoder.feed(data)
                    digest.update(out)
                    total += len(out)
                    if decoder.done:
                        break
                else:
                    digest.update(data)
                    total += len(data)
                    if total >= nbytes:
                        break
                # Pace the reader so that the upstream is always ahead of us.
                ahead = total / bytes_per_second - (time.monotonic() - start)
                if ahead > 0:
                    time.sleep(ahead)
            del raw_parts
        peak = sampler.stop()
        self.assertGreaterEqual(len(sampler.samples), 10, "RSS was not sampled during the transfer")
        return head, digest.hexdigest(), total, peak

    def baseline_rss(self) -> int:
        # Warm up: one transfer allocates whatever per-connection buffers keygate keeps.
        r = self.req("GET", "/big?mib=2", [self.K()], timeout=10)
        self.assertEqual(r.status, 200)
        time.sleep(0.2)
        return h.rss_kib(self.kg.pid)

    def test_50mib_response_streamed_with_bounded_memory(self):
        base = self.baseline_rss()
        n = 50 * MiB
        head, digest, total, peak = self.download("/big?mib=50", n, 20 * MiB)
        self.assertEqual(head.header("Content-Length"), str(n))
        self.assertEqual(total, n)
        self.assertEqual(digest, h.big_digest(n))
        growth_mib = (peak - base) / 1024
        self.assertLess(growth_mib, 30, f"keygate RSS grew by {growth_mib:.1f} MiB while relaying 50 MiB")

    def test_chunked_response_streamed(self):
        base = self.baseline_rss()
        n = 20 * MiB
        head, digest, total, peak = self.download("/big?mib=20&chunked=1", n, 20 * MiB)
        self.assertEqual(total, n)
        self.assertEqual(digest, h.big_digest(n))
        self.assertLess((peak - base) / 1024, 30)

    # ----------------------------------------------------------------- uploads

    def upload(self, head: bytes, parts, timeout: float = 20):
        """Sends `head` then each of `parts` from a thread; returns the final response
        (or raises Closed)."""
        errors = []

        def sender(sock):
            try:
                sock.sendall(head)
                for p in parts:
                    sock.sendall(p)
            except OSError as e:
                errors.append(e)

        with h.Client(self.kg.port, timeout=timeout) as c:
            t = threading.Thread(target=sender, args=(c.sock,), daemon=True)
            t.start()
            r = c.read_response(timeout=timeout)
            closed = False
            if r.has_close():
                closed = c.wait_closed(3.5)
            t.join(timeout)
        r.closed_after = closed
        return r

    def test_chunked_upload_with_odd_chunk_sizes(self):
        rnd = random.Random(1234)
        data = rnd.randbytes(5 * MiB + 12345)
        sizes = [1, 3, 7, 4093, 4097, 65535, 65537, 131071, 300007, 17, 1000003]
        parts, pos, i = [], 0, 0
        while pos < len(data):
            n = min(sizes[i % len(sizes)], len(data) - pos)
            parts.append(b"%x\r\n" % n + data[pos:pos + n] + b"\r\n")
            pos += n
            i += 1
        parts.append(b"0\r\n\r\n")
        head = h.build_request("POST", "/upload", [self.K(), ("Transfer-Encoding", "chunked")])
        r = self.upload(head, parts)
        self.assertEqual(r.status, 200, r)
        info = r.json()
        self.assertEqual(info["body_len"], len(data))
        self.assertEqual(info["body_sha256"], hashlib.sha256(data).hexdigest())
        u = self.up.wait_requests(1)[0]
        self.assertEqual(u.body_len, len(data))

    def test_content_length_upload(self):
        data = random.Random(99).randbytes(2 * MiB)
        head = h.build_request("POST", "/upload", [self.K(), ("Content-Length", str(len(data)))])
        r = self.upload(head, [data[i:i + 100000] for i in range(0, len(data), 100000)])
        self.assertEqual(r.status, 200, r)
        info = r.json()
        self.assertEqual(info["body_len"], len(data))
        self.assertEqual(info["body_sha256"], hashlib.sha256(data).hexdigest())
        u = self.up.wait_requests(1)[0]
        self.assertEqual(u.header_all("Content-Length"), [str(len(data))])

    def test_upload_of_exactly_max_body_bytes(self):
        data = random.Random(7).randbytes(MAX_BODY)
        head = h.build_request("POST", "/upload", [self.K(), ("Content-Length", str(MAX_BODY))])
        r = self.upload(head, [data])
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["body_sha256"], hashlib.sha256(data).hexdigest())

    def test_declared_length_over_limit_is_413_before_body(self):
        with h.Client(self.kg.port) as c:
            c.send(h.build_request("POST", "/upload", [self.K(), ("Content-Length", str(MAX_BODY + 1))]))
            r = c.read_response(timeout=3)  # no body byte was sent
            self.assertError(r, 413, "payload_too_large", close=True)
            self.assertClosed(c)
        self.assertNothingForwarded()

    def test_chunked_body_over_limit_is_413(self):
        block = b"q" * (256 * 1024)
        parts = [b"%x\r\n" % len(block) + block + b"\r\n"] * 28 + [b"0\r\n\r\n"]  # 7 MiB
        head = h.build_request("POST", "/upload", [self.K(), ("Transfer-Encoding", "chunked")])
        r = self.upload(head, parts)
        self.assertError(r, 413, "payload_too_large", close=True)
        self.assertTrue(r.closed_after, "connection not closed after 413")
        time.sleep(0.2)
        self.assertEqual(self.up.requests, [], "the over-limit body reached the upstream complete")
        for u in self.up.heads:
            self.assertLessEqual(u.body_len, MAX_BODY)
        # The upstream connection that carried the partial body was closed, not pooled:
        # a following request still works.
        self.assertEqual(self.req("GET", "/after", [self.K()]).status, 200)


class ChunkDecoder:
    """Incremental chunked-body decoder for the download test."""

    def __init__(self):
        self.buf = bytearray()
        self.remaining = 0
        self.state = "size"
        self.done = False

    def feed(self, data: bytes) -> bytes:
        self.buf += data
        out = bytearray()
        while True:
            if self.state == "size":
                i = self.buf.find(b"\r\n")
                if i < 0:
                    break
                size = int(bytes(self.buf[:i]).split(b";")[0], 16)
                del self.buf[:i + 2]
                if size == 0:
                    self.state = "trailers"
                else:
                    self.remaining = size
                    self.state = "data"
            elif self.state == "data":
                if not self.buf:
                    break
                n = min(self.remaining, len(self.buf))
                out += self.buf[:n]
                del self.buf[:n]
                self.remaining -= n
                if self.remaining == 0:
                    self.state = "crlf"
            elif self.state == "crlf":
                if len(self.buf) < 2:
                    break
                if self.buf[:2] != b"\r\n":
                    raise ValueError("chunk not followed by CRLF")
                del self.buf[:2]
                self.state = "size"
            elif self.state == "trailers":
                i = self.buf.find(b"\r\n")
                if i < 0:
                    break
                line = bytes(self.buf[:i])
                del self.buf[:i + 2]
                if line == b"":
                    self.done = True
                    break
        return bytes(out)


if __name__ == "__main__":
    h.main()
