#!/usr/bin/env python3
"""What keygate forwards and how (DESIGN.md §1.1 Expect, §1.2 paths, §1.9 headers)."""
import hashlib
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402


class ForwardingTest(h.KeygateTestCase):

    @classmethod
    def setUpClass(cls):
        cls.up = cls.start_upstream()
        cls.key, cls.bare = h.new_key(), h.new_key()
        cls.kg = cls.start_keygate(h.make_config(cls.up.port, keys=[
            h.key_entry("alpha", key=cls.key, scopes=["orders:read"], labels={"tenant": "acme"}),
            h.key_entry("bare", key=cls.bare),
        ]))

    def setUp(self):
        self.up.reset()

    def tearDown(self):
        self.assertUpstreamClean()

    def K(self, key=None):
        return ("X-API-Key", key or self.key)

    def forward(self, headers=(), method="GET", target="/f", body=b"", **kw):
        """Sends an authorised request, expects 200, returns (response, upstream request)."""
        r = self.req(method, target, [self.K()] + list(headers), body, **kw)
        self.assertEqual(r.status, 200, r)
        reqs = self.up.wait_requests(1)
        self.assertEqual(len(reqs), 1, reqs)
        return r, reqs[0]

    # ----------------------------------------------------------------- identity headers

    def test_forged_identity_headers_replaced(self):
        r, u = self.forward([("X-Keygate-Key-Id", "admin"), ("x-keygate-label-x", "evil"),
                             ("X-KEYGATE-SCOPES", "admin"), ("X-Keygate-Label-tenant", "other"),
                             ("X-Keygate-Whatever", "1")])
        self.assertEqual(u.header_all("X-Keygate-Key-Id"), ["alpha"])
        self.assertEqual(u.header_all("X-Keygate-Scopes"), ["orders:read"])
        self.assertEqual(u.header_all("X-Keygate-Label-tenant"), ["acme"])
        self.assertFalse(u.has("X-Keygate-Label-x"))
        self.assertFalse(u.has("X-Keygate-Whatever"))
        raw = self.up.raw_bytes()
        for forged in (b"evil", b"other", b": admin"):
            self.assertNotIn(forged, raw)

    def test_key_without_scopes_has_no_scopes_header(self):
        r = self.req("GET", "/f", [self.K(self.bare), ("X-Keygate-Scopes", "admin")])
        self.assertEqual(r.status, 200, r)
        u = self.up.wait_requests(1)[0]
        self.assertEqual(u.header_all("X-Keygate-Key-Id"), ["bare"])
        self.assertFalse(u.has("X-Keygate-Scopes"), u.headers)

    def test_forwarded_header_removed(self):
        _, u = self.forward([("Forwarded", "for=1.2.3.4;proto=https"), ("forwarded", "for=5.6.7.8")])
        self.assertFalse(u.has("Forwarded"), u.headers)

    # ----------------------------------------------------------------- X-Forwarded-*

    def test_x_forwarded_for(self):
        cases = [([], "127.0.0.1"),
                 ([("X-Forwarded-For", "1.2.3.4")], "1.2.3.4, 127.0.0.1"),
                 ([("X-Forwarded-For", "1.1.1.1"), ("x-forwarded-for", "2.2.2.2, 3.3.3.3")],
                  "1.1.1.1, 2.2.2.2, 3.3.3.3, 127.0.0.1")]
        for headers, expected in cases:
            self.up.reset()
            _, u = self.forward(headers)
            self.assertEqual(u.header_all("X-Forwarded-For"), [expected])

    def test_x_forwarded_proto_and_host_replaced(self):
        _, u = self.forward([("X-Forwarded-Proto", "https"), ("X-Forwarded-Host", "evil.example")],
                            host="app.example:8443")
        self.assertEqual(u.header_all("X-Forwarded-Proto"), ["http"])
        self.assertEqual(u.header_all("X-Forwarded-Host"), ["app.example:8443"])
        self.assertEqual(u.header_all("Host"), ["app.example:8443"])

    # ----------------------------------------------------------------- X-Request-Id

    def test_request_id_kept_when_valid(self):
        for rid in ("abc-123._:XYZ", "a", "x" * 128):
            self.up.reset()
            r, u = self.forward([("X-Request-Id", rid)])
            self.assertEqual(u.header_all("X-Request-Id"), [rid])
            self.assertEqual(r.header_all("X-Request-Id"), [rid])

    def test_request_id_replaced_when_invalid(self):
        for rid in ("bad id", "x" * 129, "a/b", "a,b", "a\"b"):
            self.up.reset()
            r, u = self.forward([("X-Request-Id", rid)])
            got = u.header_all("X-Request-Id")
            self.assertEqual(len(got), 1, got)
            self.assertNotEqual(got[0], rid)
            self.assertRegex(got[0], h.REQUEST_ID_RE)
            self.assertEqual(r.header_all("X-Request-Id"), got)

    def test_request_id_generated_and_unique(self):
        ids = set()
        for _ in range(5):
            self.up.reset()
            r, u = self.forward()
            got = u.header_all("X-Request-Id")
            self.assertEqual(len(got), 1)
            self.assertRegex(got[0], h.REQUEST_ID_RE)
            self.assertEqual(r.header_all("X-Request-Id"), got)
            ids.add(got[0])
        self.assertEqual(len(ids), 5, "request ids repeat")

    def test_request_id_on_every_response(self):
        resps = [self.req("GET", "/f"),                                  # 401
                 self.req("GET", "/f", [self.K(), ("Expect", "foo")]),   # 417
                 self.req("GET", "/a/%2F/b", [self.K()]),                # 400
                 self.req("GET", "/hop", [self.K()])]                   # upstream sets its own
        for r in resps:
            got = r.header_all("X-Request-Id")
            self.assertEqual(len(got), 1, r)
            self.assertRegex(got[0], h.REQUEST_ID_RE)
        self.assertNotEqual(resps[3].header("X-Request-Id"), "from-upstream")

    # ----------------------------------------------------------------- hop-by-hop

    def test_client_connection_close_honoured(self):
        with h.Client(self.kg.port) as c:
            r = c.request("GET", "/f", [self.K(), ("Connection", "close")])
            self.assertEqual(r.status, 200, r)
            self.assertTrue(r.has_close(), r.headers)
            self.assertClosed(c)

    def test_connection_listed_headers_removed(self):
        r, u = self.forward([("Connection", "close, X-Forwarded-For"), ("X-Forwarded-For", "6.6.6.6")])
        self.assertEqual(u.header_all("X-Forwarded-For"), ["127.0.0.1"])
        self.assertTrue(r.has_close())
        self.assertNotIn(b"6.6.6.6", self.up.raw_bytes())
        self.up.reset()
        r, u = self.forward([("Connection", "X-Custom, x-other"), ("X-Custom", "v"), ("X-Other", "w"),
                             ("X-Kept", "k")])
        self.assertFalse(u.has("X-Custom"))
        self.assertFalse(u.has("X-Other"))
        self.assertEqual(u.header_all("X-Kept"), ["k"])
        self.assertNotIn("x-custom", u.connection_tokens())

    def test_headers_keygate_adds_survive_connection_naming_them(self):
        r, u = self.forward([("Connection", "X-Keygate-Key-Id, X-Request-Id, X-Forwarded-Proto"),
                             ("X-Request-Id", "client-id-1")])
        self.assertEqual(u.header_all("X-Keygate-Key-Id"), ["alpha"])
        self.assertEqual(u.header_all("X-Forwarded-Proto"), ["http"])
        got = u.header_all("X-Request-Id")
        self.assertEqual(len(got), 1)
        self.assertNotEqual(got[0], "client-id-1", "a header named by Connection goes with its value")

    def test_hop_by_hop_request_headers_removed(self):
        _, u = self.forward([("Keep-Alive", "timeout=5"), ("Proxy-Connection", "keep-alive"),
                             ("TE", "trailers"), ("Trailer", "X-T"), ("Upgrade", "foo/1"),
                             ("Connection", "keep-alive")])
        for name in ("Keep-Alive", "Proxy-Connection", "TE", "Trailer", "Upgrade"):
            self.assertFalse(u.has(name), f"{name} forwarded: {u.headers}")

    def test_h2c_upgrade_never_reaches_upstream(self):
        r, u = self.forward([("Connection", "Upgrade, HTTP2-Settings"), ("Upgrade", "h2c"),
                             ("HTTP2-Settings", "AAMAAABkAAQAAP__")])
        self.assertEqual(r.status, 200)
        self.assertFalse(u.has("Upgrade"))
        self.assertFalse(u.has("HTTP2-Settings"))
        self.assertNotIn("upgrade", u.connection_tokens())
        self.assertNotIn(b"h2c", self.up.raw_bytes().lower())

    def test_hop_by_hop_response_headers_removed(self):
        r, _ = self.forward(target="/hop")
        for name in ("Keep-Alive", "Proxy-Connection", "Upgrade", "Trailer", "X-Up-Private"):
            self.assertFalse(r.has(name), f"{name} relayed: {r.headers}")
        self.assertNotIn("x-up-private", r.connection_tokens())
        self.assertEqual(r.header_all("X-Up-Public"), ["visible"])

    def test_websocket_upgrade_tunnelled(self):
        with h.Client(self.kg.port) as c:
            c.send(h.build_request("GET", "/ws", [self.K(), ("Connection", "Upgrade"),
                                                  ("Upgrade", "websocket"),
                                                  ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
                                                  ("Sec-WebSocket-Version", "13")]))
            r = c.read_response()
            self.assertEqual(r.status, 101, r)
            u = self.up.wait_heads(1)[0]
            self.assertEqual(u.header("Upgrade"), "websocket")
            self.assertIn("upgrade", u.connection_tokens())
            self.assertEqual(u.header("X-Keygate-Key-Id"), "alpha")
            c.send(b"ping-over-tunnel")
            deadline = time.monotonic() + 3
            got = b""
            while len(got) < 16:
                got += c.bs.read_some(deadline)
            self.assertEqual(got, b"PING-OVER-TUNNEL")

    # ----------------------------------------------------------------- path normalisation

    def test_path_normalised_before_forwarding(self):
        cases = [("/a/./b/../c?x=/../y&z=%2F", "/a/c?x=/../y&z=%2F"),
                 ("//a//b///c", "/a/b/c"),
                 ("/%61%62c/%7Euser", "/abc/~user"),
                 ("/a/%2e%2E/b", "/b"),
                 ("/a/b/..", "/a/"),
                 ("/?q=%2e%2e", "/?q=%2e%2e")]
        for sent, expected in cases:
            self.up.reset()
            _, u = self.forward(target=sent)
            self.assertEqual(u.target, expected, f"sent {sent}")

    def test_reserved_escapes_kept(self):
        _, u = self.forward(target="/a%20b/c%3Fd")
        self.assertIn(u.target, ("/a%20b/c%3Fd",), u.target)

    def test_public_path_after_normalisation_only(self):
        # /healthz is public; climbing out of it must not make /admin public.
        for target in ("/healthz/../admin", "/healthz/%2e%2e/admin", "/healthz/./../admin"):
            r = self.req("GET", target)
            self.assertError(r, 401, "missing_api_key")
        self.assertNothingForwarded()
        # ...while a path that normalises to /healthz is public.
        r = self.req("GET", "/x/../healthz")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(self.up.wait_requests(1)[0].target, "/healthz")

    # ----------------------------------------------------------------- Expect

    def test_expect_100_continue(self):
        for value in ("100-continue", "100-Continue"):
            self.up.reset()
            with h.Client(self.kg.port) as c:
                c.send(h.build_request("POST", "/echo", [self.K(), ("Expect", value),
                                                         ("Content-Length", "5")]))
                interim = c.read_response(timeout=3)
                self.assertEqual(interim.status, 100, interim)
                self.assertTrue(interim.head.startswith(b"HTTP/1.1 100 Continue\r\n"), interim.head)
                self.assertEqual(self.up.requests, [], "a complete request upstream before the body came")
                c.send(b"hello")
                r = c.read_response()
                self.assertEqual(r.status, 200, r)
                self.assertEqual(r.body, b"hello")
            u = self.up.wait_requests(1)[0]
            self.assertFalse(u.has("Expect"), u.headers)
            self.assertEqual(bytes(u.body), b"hello")

    def test_expect_on_denied_request_gets_no_100(self):
        with h.Client(self.kg.port) as c:
            c.send(h.build_request("POST", "/echo", [("Expect", "100-continue"), ("Content-Length", "5")]))
            r = c.read_response(timeout=3)
            self.assertError(r, 401, "missing_api_key", close=True)
            self.assertClosed(c)
        self.assertNothingForwarded()

    def test_other_expect_is_417(self):
        for headers, body in (([("Expect", "foo")], b""),
                              ([("Expect", "100-continue, foo")], b"abc"),
                              ([("Expect", "foo"), ("Content-Length", "3")], None)):
            with h.Client(self.kg.port) as c:
                c.send(h.build_request("POST", "/echo", [self.K()] + headers, body or b""))
                r = c.read_response(timeout=3)
                self.assertError(r, 417, "expectation_failed", close=True)
                self.assertClosed(c)
        self.assertNothingForwarded()

    # ----------------------------------------------------------------- responses

    def test_interim_1xx_from_upstream_not_relayed(self):
        with h.Client(self.kg.port) as c:
            c.send(h.build_request("GET", "/early-hints", [self.K()]))
            r = c.read_response()
            self.assertEqual(r.status, 200, "a 103 from the upstream was relayed")

    def test_head_and_bodiless_responses_keep_connection_in_sync(self):
        with h.Client(self.kg.port) as c:
            r = c.request("HEAD", "/f", [self.K()])
            self.assertEqual(r.status, 200)
            self.assertEqual(c.pending(), b"")
            r = c.request("GET", "/status?code=204", [self.K()])
            self.assertEqual(r.status, 204)
            r = c.request("GET", "/status?code=304", [self.K()])
            self.assertEqual(r.status, 304)
            r = c.request("GET", "/f2", [self.K()])
            self.assertEqual(r.status, 200)
            self.assertEqual(r.json()["target"], "/f2")

    def test_request_body_forwarded(self):
        r, u = self.forward(method="POST", target="/echo", body=b"payload-123")
        self.assertEqual(r.body, b"payload-123")
        self.assertEqual(bytes(u.body), b"payload-123")
        self.assertEqual(u.header_all("Content-Length"), ["11"])

    def test_http10_client(self):
        with h.Client(self.kg.port) as c:
            c.send(h.build_request("GET", "/f", [self.K()], version="HTTP/1.0"))
            r = c.read_response()
            self.assertEqual(r.status, 200, r)
            self.assertTrue(r.version in ("HTTP/1.0", "HTTP/1.1"))
            self.assertClosed(c)
        self.assertEqual(len(self.up.wait_requests(1)), 1)
        # A chunked upstream response is never sent chunked to an HTTP/1.0 client.
        with h.Client(self.kg.port) as c:
            c.send(h.build_request("GET", "/big?bytes=100000&chunked=1", [self.K()], version="HTTP/1.0"))
            r = c.read_response()
            self.assertEqual(r.status, 200, r)
            self.assertIsNone(r.header("Transfer-Encoding"), r.headers)
            self.assertEqual(hashlib.sha256(r.body).hexdigest(), h.big_digest(100000))
            self.assertTrue(c.wait_closed(3))


if __name__ == "__main__":
    h.main()
