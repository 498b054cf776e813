#!/usr/bin/env python3
"""Upstream faults and the upstream connection pool (DESIGN.md §1.9, §1.10)."""
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402


class NoUpstreamTest(h.KeygateTestCase):
    """Nothing listens on the upstream port."""

    @classmethod
    def setUpClass(cls):
        cls.key = h.new_key()
        cls.kg = cls.start_keygate(h.make_config(h.free_port(), keys=[h.key_entry("alpha", key=cls.key)]))

    def test_cannot_connect_is_502(self):
        rid = h.unique_id()
        t0 = time.monotonic()
        r = self.req("GET", "/a", [("X-API-Key", self.key), ("X-Request-Id", rid)])
        self.assertError(r, 502, "upstream_unavailable")
        self.assertLess(time.monotonic() - t0, 2.5, "a refused connect must fail fast")
        self.assertEqual(r.header("X-Request-Id"), rid)
        log = self.kg.find_log(rid)
        self.assertIsNotNone(log)
        self.assertEqual(log.get("status"), 502)
        self.assertEqual(log.get("outcome"), "error")

    def test_cannot_connect_with_body_is_502(self):
        r = self.req("POST", "/a", [("X-API-Key", self.key)], b"x" * 1000)
        self.assertError(r, 502, "upstream_unavailable")

    def test_auth_still_checked_first(self):
        r = self.req("GET", "/a")
        self.assertError(r, 401, "missing_api_key")


class UpstreamFaultsTest(h.KeygateTestCase):

    @classmethod
    def setUpClass(cls):
        cls.up = cls.start_upstream()
        cls.key = h.new_key()
        cls.kg = cls.start_keygate(h.make_config(cls.up.port, keys=[h.key_entry("alpha", key=cls.key)],
                                                 upstream={"response_timeout": "1s"}))

    def setUp(self):
        self.up.reset()

    def tearDown(self):
        self.assertUpstreamClean()

    def K(self):
        return ("X-API-Key", self.key)

    # ----------------------------------------------------------------- timeouts and failures

    def test_no_response_head_is_504(self):
        rid = h.unique_id()
        t0 = time.monotonic()
        r = self.req("GET", "/hang", [self.K(), ("X-Request-Id", rid)], timeout=6)
        elapsed = time.monotonic() - t0
        self.assertError(r, 504, "upstream_timeout")
        self.assertGreaterEqual(elapsed, 0.9, "gave up before response_timeout")
        self.assertLess(elapsed, 2.5, "response_timeout (1s) not enforced")
        log = self.kg.find_log(rid)
        self.assertIsNotNone(log)
        self.assertEqual(log.get("status"), 504)
        self.assertEqual(log.get("outcome"), "error")

    def test_response_within_timeout(self):
        r = self.req("GET", "/slow?ms=400", [self.K()])
        self.assertEqual(r.status, 200, r)

    def test_reset_before_head_is_502(self):
        for path in ("/reset", "/close"):
            r = self.req("GET", path, [self.K()])
            self.assertError(r, 502, "upstream_unavailable")
        r = self.req("POST", "/reset-early", [self.K()], b"y" * 5000)
        self.assertError(r, 502, "upstream_unavailable")
        # The next request is served normally.
        self.assertEqual(self.req("GET", "/f", [self.K()]).status, 200)

    def test_failure_after_head_closes_client(self):
        with h.Client(self.kg.port) as c:
            c.send(h.build_request("GET", "/truncate", [self.K()]))
            r = c.read_response()
            self.assertEqual(r.status, 200)
            self.assertFalse(r.complete, "a truncated upstream body must not look complete")
            self.assertTrue(c.wait_closed(3))
        with h.Client(self.kg.port) as c:
            c.send(h.build_request("GET", "/truncchunk", [self.K()]))
            r = c.read_response()
            self.assertEqual(r.status, 200)
            self.assertFalse(r.complete, "keygate sent a final chunk for a failed upstream body")
            self.assertTrue(c.wait_closed(3))

    def test_early_upstream_answer_relayed_then_closed(self):
        with h.Client(self.kg.port) as c:
            c.send(h.build_request("POST", "/early", [self.K(), ("Content-Length", str(1 << 20))])
                   + b"z" * 16384)
            # The client now waits (as a client reading while it uploads would) for the
            # upstream's answer; the upstream already sent it and reads on.
            try:
                r = c.read_response(timeout=4)
            except socket.timeout:
                self.fail("the upstream's early answer was not relayed within 4 s")
            self.assertEqual(r.status, 403, r)
            self.assertEqual(r.body, b'{"upstream":"early"}')
            self.assertTrue(c.wait_closed(4), "client connection kept open after an early answer")

    def test_response_timeout_counts_from_last_request_byte(self):
        # The upload takes twice response_timeout; the upstream answers at once after it.
        with h.Client(self.kg.port, timeout=10) as c:
            c.send(h.build_request("POST", "/upload", [self.K(), ("Transfer-Encoding", "chunked")]))
            for _ in range(5):
                c.send(b"5\r\nhello\r\n")
                time.sleep(0.4)
            c.send(b"0\r\n\r\n")
            r = c.read_response()
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.json()["body_len"], 25)

    def test_close_delimited_upstream_response(self):
        with h.Client(self.kg.port) as c:
            c.send(h.build_request("GET", "/eof", [self.K()]))
            r = c.read_response()
            self.assertEqual(r.status, 200, r)
            self.assertTrue(r.complete)
            self.assertEqual(r.body, b"e" * 70000)
            if r.header("Content-Length") is None and r.header("Transfer-Encoding") is None:
                self.assertTrue(c.wait_closed(3))
            else:
                # Re-framed: the connection can carry on.
                self.assertEqual(c.request("GET", "/f", [self.K()]).status, 200)

    def test_ambiguous_upstream_framing_not_relayed(self):
        with h.Client(self.kg.port) as c:
            c.send(h.build_request("GET", "/badframing", [self.K()]))
            r = c.read_response()
            self.assertEqual(r.status, 502, f"a response with two Content-Length values was relayed: {r!r}")

    # ----------------------------------------------------------------- pool

    def test_keepalive_reuse_one_client_connection(self):
        with h.Client(self.kg.port) as c:
            for i in range(20):
                r = c.request("GET", f"/r{i}", [self.K()])
                self.assertEqual(r.status, 200, r)
                self.assertFalse(r.has_close())
        reqs = self.up.wait_requests(20)
        self.assertEqual([u.target for u in reqs], [f"/r{i}" for i in range(20)])
        conns = {u.conn_id for u in reqs}
        self.assertLessEqual(len(conns), 2, f"20 requests used {len(conns)} upstream connections")
        self.assertLessEqual(self.up.accepted, 2)

    def test_pool_shared_across_client_connections(self):
        for i in range(10):
            r = self.req("GET", f"/s{i}", [self.K()])
            self.assertEqual(r.status, 200, r)
        conns = {u.conn_id for u in self.up.wait_requests(10)}
        self.assertLessEqual(len(conns), 2, f"10 sequential clients used {len(conns)} upstream connections")

    def test_upstream_connection_close_respected(self):
        with h.Client(self.kg.port) as c:
            for _ in range(3):
                self.assertEqual(c.request("GET", "/connclose", [self.K()]).status, 200)
                self.assertEqual(c.request("GET", "/f", [self.K()]).status, 200)

    def test_stale_connection_closed_after_response(self):
        # The upstream answers like a keep-alive server and then closes the connection.
        with h.Client(self.kg.port) as c:
            for _ in range(4):
                r = c.request("GET", "/stale", [self.K()])
                self.assertEqual(r.status, 200, r)
                time.sleep(0.2)
        self.assertEqual(len(self.up.wait_requests(4)), 4)

    def test_stale_pooled_connection_retried_for_get(self):
        # /oneshot answers the first request of a connection and closes on the next one
        # without a byte: a pooled connection gone stale under keygate's feet.
        with h.Client(self.kg.port) as c:
            for _ in range(3):
                r = c.request("GET", "/oneshot", [self.K()])
                self.assertEqual(r.status, 200, r)
                time.sleep(0.05)
        heads = self.up.wait_requests(3)
        stale = [u for u in self.up.heads if u.seq > 0]
        self.assertTrue(stale, "keygate never reused a pooled connection (see keep-alive tests)")
        for u in stale:
            self.assertTrue(any(v.seq == 0 and v.conn_id > u.conn_id for v in heads),
                            "the failed attempt was not retried on a fresh connection")

    def test_stale_pooled_connection_not_retried_with_body(self):
        self.assertEqual(self.req("GET", "/oneshot", [self.K()]).status, 200)
        self.assertEqual(self.req("GET", "/oneshot", [self.K()]).status, 200)
        self.up.reset()
        r = self.req("POST", "/oneshot", [self.K()], b"body-bytes")
        time.sleep(0.3)
        posts = [u for u in self.up.heads if u.method == "POST"]
        self.assertEqual(len(posts), 1, f"a request with a body was replayed: {posts!r}")
        if posts[0].seq > 0:
            self.assertError(r, 502, "upstream_unavailable")
        else:
            self.assertEqual(r.status, 200, r)


if __name__ == "__main__":
    h.main()
