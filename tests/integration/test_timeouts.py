#!/usr/bin/env python3
"""Slow clients and connection limits (DESIGN.md §1 "Timeouts and connections", §1.10)."""
import os
import select
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

HEADER_TIMEOUT = 1.0
IDLE_TIMEOUT = 2.0
SLACK = 0.5  # scheduling slack on a loaded 2-core machine


class SlowClientTest(h.KeygateTestCase):

    @classmethod
    def setUpClass(cls):
        cls.up = cls.start_upstream()
        cls.key = h.new_key()
        cls.kg = cls.start_keygate(h.make_config(cls.up.port, keys=[h.key_entry("alpha", key=cls.key)],
                                                 limits={"header_timeout": "1s", "idle_timeout": "2s"}))

    def setUp(self):
        self.up.reset()

    def trickle(self, c: h.Client, data: bytes, interval: float, limit: float):
        """Sends `data` one byte every `interval` s until keygate answers or closes or
        `limit` s pass. Returns (elapsed, response or None, closed)."""
        t0 = time.monotonic()
        i = 0
        while time.monotonic() - t0 < limit:
            if i < len(data):
                if not c.try_send(data[i:i + 1]):
                    break
                i += 1
            readable, _, _ = select.select([c.sock], [], [], interval)
            if readable:
                break
        elapsed = time.monotonic() - t0
        try:
            r = c.read_response(timeout=2)
        except h.Closed:
            r = None
        except OSError:
            r = None
        return elapsed, r

    def assert_408_or_closed(self, c: h.Client, r):
        if r is not None:
            self.assertError(r, 408, "request_timeout", close=True)
        self.assertTrue(c.wait_closed(3), "connection still open after the header timeout")

    def test_partial_head_byte_by_byte(self):
        head = h.build_request("GET", "/slow-loris", [("X-API-Key", self.key)] +
                               [(f"X-Pad{i}", "p" * 20) for i in range(20)])
        with h.Client(self.kg.port) as c:
            elapsed, r = self.trickle(c, head, 0.05, 6)
            self.assertLess(elapsed, HEADER_TIMEOUT + 1 + SLACK,
                            "a head trickled byte by byte was not cut off by header_timeout")
            self.assert_408_or_closed(c, r)
        self.assertNothingForwarded()

    def test_silent_connection_closed_without_answer(self):
        with h.Client(self.kg.port) as c:
            t0 = time.monotonic()
            self.assertTrue(c.wait_closed(HEADER_TIMEOUT + 1 + SLACK), "idle new connection not closed")
            elapsed = time.monotonic() - t0
            self.assertEqual(c.pending(), b"", "a connection that sent nothing must be closed silently")
            self.assertGreater(elapsed, HEADER_TIMEOUT - 0.3, "closed before header_timeout")

    def test_keepalive_connection_idle_timeout(self):
        with h.Client(self.kg.port) as c:
            r = c.request("GET", "/a", [("X-API-Key", self.key)])
            self.assertEqual(r.status, 200)
            # Longer than header_timeout is fine between requests: idle_timeout applies.
            time.sleep(HEADER_TIMEOUT + 0.3)
            r = c.request("GET", "/b", [("X-API-Key", self.key)])
            self.assertEqual(r.status, 200, "keep-alive connection closed before idle_timeout")
            t0 = time.monotonic()
            self.assertTrue(c.wait_closed(IDLE_TIMEOUT + 1 + SLACK), "idle keep-alive connection not closed")
            self.assertGreater(time.monotonic() - t0, IDLE_TIMEOUT - 0.3)
            self.assertEqual(c.pending(), b"")

    def test_second_head_on_keepalive_connection_times_out(self):
        with h.Client(self.kg.port) as c:
            r = c.request("GET", "/a", [("X-API-Key", self.key)])
            self.assertEqual(r.status, 200)
            elapsed, r = self.trickle(c, b"GET /b HTTP/1.1\r\nHost: test.local\r\nX-Pad: " + b"p" * 200,
                                      0.05, 6)
            self.assertLess(elapsed, HEADER_TIMEOUT + 1 + SLACK)
            self.assert_408_or_closed(c, r)

    def test_stalled_body_times_out(self):
        with h.Client(self.kg.port) as c:
            c.send(h.build_request("POST", "/upload", [("X-API-Key", self.key), ("Content-Length", "100")])
                   + b"0123456789")
            t0 = time.monotonic()
            r = c.read_response(timeout=IDLE_TIMEOUT + 3)
            elapsed = time.monotonic() - t0
            self.assertError(r, 408, "request_timeout", close=True)
            self.assertLess(elapsed, IDLE_TIMEOUT + 1 + SLACK)
            self.assertTrue(c.wait_closed(3.5))
        self.assertEqual(self.up.requests, [])


class MaxConnectionsTest(h.KeygateTestCase):

    @classmethod
    def setUpClass(cls):
        cls.up = cls.start_upstream()
        cls.key = h.new_key()
        cls.kg = cls.start_keygate(h.make_config(cls.up.port, keys=[h.key_entry("alpha", key=cls.key)],
                                                 threads=2,
                                                 limits={"max_connections": 2, "header_timeout": "5s"}))

    def test_third_connection_gets_503(self):
        time.sleep(0.3)  # let keygate notice the readiness probe's connection closed
        K = [("X-API-Key", self.key)]
        c1, c2 = h.Client(self.kg.port), h.Client(self.kg.port)
        try:
            self.assertEqual(c1.request("GET", "/1", K).status, 200)
            self.assertEqual(c2.request("GET", "/2", K).status, 200)
            for _ in range(3):
                with h.Client(self.kg.port) as c3:
                    r = c3.read_response(timeout=3)
                    self.assertError(r, 503, "overloaded", close=True)
                    self.assertClosed(c3)
            # The two admitted connections are unaffected.
            self.assertEqual(c1.request("GET", "/1b", K).status, 200)
            self.assertEqual(c2.request("GET", "/2b", K).status, 200)
            c1.close()
            time.sleep(0.3)
            with h.Client(self.kg.port) as c4:
                self.assertEqual(c4.request("GET", "/4", K).status, 200,
                                 "a freed connection slot was not reused")
        finally:
            c1.close()
            c2.close()


if __name__ == "__main__":
    h.main()
