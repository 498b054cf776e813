#!/usr/bin/env python3
"""Request framing and parsing on raw bytes (DESIGN.md §1.1, §1.2).

Every refused request here is otherwise authorised (it carries a valid key) and is
followed on the same connection by a pipelined "smuggled" request, so a keygate that
accepted the framing would forward something. For each one we assert keygate's status
and error code, `Connection: close` and an actual close, that the recording upstream
received no byte at all, and that keygate still serves a fresh connection (canary).
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

MAX_HEADER_BYTES = 4096
MAX_HEADERS = 20
MAX_BODY = 1048576


class FramingTest(h.KeygateTestCase):

    @classmethod
    def setUpClass(cls):
        cls.up = cls.start_upstream()
        cls.key = h.new_key()
        cls.kg = cls.start_keygate(h.make_config(cls.up.port, keys=[h.key_entry("alpha", key=cls.key)],
                                                 limits={"max_header_bytes": MAX_HEADER_BYTES,
                                                         "max_headers": MAX_HEADERS,
                                                         "max_body_bytes": MAX_BODY,
                                                         "header_timeout": "3s"}))

    def setUp(self):
        self.up.reset()

    def tearDown(self):
        self.assertUpstreamClean()

    # ----------------------------------------------------------------- helpers

    def R(self, text: str) -> bytes:
        """Raw bytes from `text` with {K} replaced by the valid key."""
        return text.replace("{K}", self.key).encode("latin-1")

    @property
    def smuggled(self) -> bytes:
        return self.R("GET /smuggled HTTP/1.1\r\nHost: test.local\r\nX-API-Key: {K}\r\n\r\n")

    def canary(self):
        """keygate still answers a fresh connection; apart from it the upstream completes no
        request (a head forwarded before a body error may still land: it stays incomplete)."""
        self.up.reset()
        r = self.req("GET", "/canary", [("X-API-Key", self.key)])
        self.assertEqual(r.status, 200, r)
        self.up.wait_requests(1)
        targets = [u.target for u in self.up.requests]
        self.assertEqual(targets, ["/canary"])
        self.assertNotIn("/smuggled", [u.target for u in self.up.heads])

    def reject(self, raw: bytes, status: int = 400, code: str = "bad_request",
               smuggle: bool = True, nothing_upstream: bool = True, timeout: float = 4.0):
        """Sends `raw` (+ a pipelined request), expects keygate's error, a close, and
        nothing (or at least nothing complete and nothing smuggled) upstream."""
        self.up.reset()
        with h.Client(self.kg.port, timeout=timeout) as c:
            c.try_send(raw + (self.smuggled if smuggle else b""))
            try:
                r = c.read_response(timeout=timeout)
            except h.Closed:
                self.fail(f"keygate closed without answering {raw[:200]!r}")
            self.assertError(r, status, code, close=True)
            self.assertClosed(c)
        if nothing_upstream:
            self.assertNothingForwarded()
        else:
            time.sleep(0.2)  # let a forwarded head land before the canary's reset
            self.assertEqual(self.up.requests, [], "a complete request reached the upstream")
        self.assertNotIn(b"/smuggled", self.up.raw_bytes())
        self.canary()
        return r

    def accept(self, raw: bytes, target: str = "/ok", body: bytes = b""):
        """Sends `raw`, expects 200 and exactly one upstream request with `target` and `body`."""
        with h.Client(self.kg.port) as c:
            c.send(raw)
            r = c.read_response()
            self.assertEqual(r.status, 200, r)
        reqs = self.up.wait_requests(1)
        self.assertEqual(len(reqs), 1)
        self.assertEqual(reqs[0].target, target)
        self.assertEqual(bytes(reqs[0].body), body)
        return reqs[0]

    # ----------------------------------------------------------------- Transfer-Encoding / Content-Length

    def test_content_length_and_transfer_encoding(self):
        for head in ("Content-Length: 6\r\nTransfer-Encoding: chunked\r\n",
                     "Transfer-Encoding: chunked\r\nContent-Length: 6\r\n",
                     "Content-Length: 0\r\nTransfer-Encoding: chunked\r\n"):
            with self.subTest(head=head):
                self.reject(self.R("POST /a HTTP/1.1\r\nHost: test.local\r\nX-API-Key: {K}\r\n" + head
                                   + "\r\n0\r\n\r\nX"))

    def test_transfer_encoding_not_exactly_chunked(self):
        body = "5\r\nhello\r\n0\r\n\r\n"
        for te in ("Transfer-Encoding: gzip\r\n", "Transfer-Encoding: gzip, chunked\r\n",
                   "Transfer-Encoding: chunked, chunked\r\n", "Transfer-Encoding: xchunked\r\n",
                   "Transfer-Encoding: chunkedx\r\n", "Transfer-Encoding: identity\r\n",
                   "Transfer-Encoding: \"chunked\"\r\n", "Transfer-Encoding: \r\n",
                   "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
                   "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n",
                   "Transfer-Encoding: chunked\r\ntransfer-encoding: gzip\r\n",
                   "Transfer-Encoding : chunked\r\n"):
            with self.subTest(te=te):
                self.reject(self.R("POST /a HTTP/1.1\r\nHost: test.local\r\nX-API-Key: {K}\r\n" + te
                                   + "\r\n" + body))

    def test_transfer_encoding_on_http10(self):
        self.reject(self.R("POST /a HTTP/1.0\r\nHost: test.local\r\nX-API-Key: {K}\r\n"
                           "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"))

    def test_folded_lines(self):
        for head in ("Transfer-Encoding: gzip\r\n chunked\r\n",
                     "Transfer-Encoding:\r\n chunked\r\n",
                     "Transfer-Encoding:\r\n\tchunked\r\n",
                     "X-Foo: a\r\n b\r\n",
                     "X-Foo: a\r\n\tb\r\n",
                     "X-Foo: a\r\n X-Bar: b\r\n"):
            with self.subTest(head=head):
                self.reject(self.R("POST /a HTTP/1.1\r\nHost: test.local\r\nX-API-Key: {K}\r\n" + head
                                   + "\r\n5\r\nhello\r\n0\r\n\r\n"))
        # A folded line right after the request line.
        self.reject(self.R("GET /a HTTP/1.1\r\n Host: test.local\r\nHost: test.local\r\nX-API-Key: {K}\r\n\r\n"))

    def test_bad_content_length(self):
        for cl in ("Content-Length: 5\r\nContent-Length: 5\r\n",
                   "Content-Length: 5, 5\r\n", "Content-Length: 1, 1\r\n",
                   "Content-Length: 5\r\ncontent-length: 6\r\n",
                   "Content-Length: +5\r\n", "Content-Length: -5\r\n", "Content-Length: 5 5\r\n",
                   "Content-Length: 0x5\r\n", "Content-Length: 5.0\r\n", "Content-Length: 5a\r\n",
                   "Content-Length: \r\n", "Content-Length: 0000000000000000005\r\n",
                   "Content-Length: 99999999999999999999\r\n",
                   "Content-Length : 5\r\n"):
            with self.subTest(cl=cl):
                self.reject(self.R("POST /a HTTP/1.1\r\nHost: test.local\r\nX-API-Key: {K}\r\n" + cl
                                   + "\r\nhello"))

    def test_content_length_boundaries(self):
        # 18 digits are fine...
        self.accept(self.R("POST /ok HTTP/1.1\r\nHost: test.local\r\nX-API-Key: {K}\r\n"
                           "Content-Length: 000000000000000005\r\n\r\nhello"), body=b"hello")
        # ...and 18 nines is a valid number over max_body_bytes: 413 before any body byte.
        self.reject(self.R("POST /a HTTP/1.1\r\nHost: test.local\r\nX-API-Key: {K}\r\n"
                           "Content-Length: 999999999999999999\r\n\r\n"),
                    413, "payload_too_large", smuggle=False)
        self.reject(self.R("POST /a HTTP/1.1\r\nHost: test.local\r\nX-API-Key: {K}\r\n"
                           f"Content-Length: {MAX_BODY + 1}\r\n\r\n"),
                    413, "payload_too_large", smuggle=False)

    def test_transfer_encoding_case_insensitive(self):
        self.accept(self.R("POST /ok HTTP/1.1\r\nHost: test.local\r\nX-API-Key: {K}\r\n"
                           "Transfer-Encoding: CHUNKED\r\n\r\n5\r\nhello\r\n0\r\n\r\n"), body=b"hello")

    # ----------------------------------------------------------------- header names, Host

    def test_underscore_spellings_of_sensitive_headers(self):
        for line in ("X_Api_Key: {K}", "x_api_key: {K}", "X-API_Key: {K}", "X-Forwarded_For: 1.2.3.4",
                     "X_Forwarded_For: 1.2.3.4", "X_Forwarded_Proto: https",
                     "X-Forwarded_Host: evil", "X_Request_Id: abc", "X_Keygate_Key_Id: admin",
                     "X-Keygate_Label_tenant: evil"):
            with self.subTest(line=line):
                self.reject(self.R("GET /a HTTP/1.1\r\nHost: test.local\r\nX-API-Key: {K}\r\n" + line
                                   + "\r\n\r\n"))

    def test_host_missing_or_repeated(self):
        self.reject(self.R("GET /a HTTP/1.1\r\nX-API-Key: {K}\r\n\r\n"))
        self.reject(self.R("GET /a HTTP/1.1\r\nHost: test.local\r\nHost: other\r\nX-API-Key: {K}\r\n\r\n"))
        self.reject(self.R("GET /a HTTP/1.1\r\nHost: test.local\r\nhost: test.local\r\nX-API-Key: {K}\r\n\r\n"))

    def test_http10_without_host_is_fine(self):
        with h.Client(self.kg.port) as c:
            c.send(self.R("GET /ok HTTP/1.0\r\nX-API-Key: {K}\r\n\r\n"))
            r = c.read_response()
            self.assertEqual(r.status, 200, r)
        self.assertEqual([u.target for u in self.up.wait_requests(1)], ["/ok"])

    def test_malformed_header_lines(self):
        for line in ("NoColonHere", "Bad Name: x", ": empty-name", "X-Foo: a\rb", "X-Foo: a\x00b",
                     "X-Foo\x01: b"):
            with self.subTest(line=line):
                self.reject(self.R("GET /a HTTP/1.1\r\nHost: test.local\r\nX-API-Key: {K}\r\n" + line
                                   + "\r\n\r\n"))

    def test_malformed_request_lines(self):
        for line in ("GET  /a HTTP/1.1", "GET /a  HTTP/1.1", "GET /a", "GET /a HTTP/1.1 extra",
                     "GET /a HTTP/9.9x", "G(T /a HTTP/1.1", " GET /a HTTP/1.1"):
            with self.subTest(line=line):
                self.reject(self.R(line + "\r\nHost: test.local\r\nX-API-Key: {K}\r\n\r\n"))

    # ----------------------------------------------------------------- targets

    def test_non_origin_form_targets(self):
        for line in ("GET http://x/ HTTP/1.1", "GET http://test.local/a HTTP/1.1",
                     "CONNECT x:443 HTTP/1.1", "CONNECT test.local:443 HTTP/1.1",
                     "OPTIONS * HTTP/1.1", "GET * HTTP/1.1", "GET a/b HTTP/1.1"):
            with self.subTest(line=line):
                self.reject(self.R(line + "\r\nHost: test.local\r\nX-API-Key: {K}\r\n\r\n"))

    def test_bad_targets(self):
        for target in ("/a#frag", "/#", "/caf\xc3\xa9", "/a\x7fb", "/a\x01b", "/%2F", "/a%2fb",
                       "/a/%2F/../b", "/%5C", "/a%5cb", "/a\\b", "/a;b", "/a;jsessionid=1", "/%00",
                       "/a%00b", "/..", "/../a", "/a/../..", "/%2e%2e/admin", "/a/%2E%2E/%2e%2e",
                       "/a%zz", "/a%2", "/a%", "/x?y#z"):
            with self.subTest(target=target):
                self.reject(self.R(f"GET {target} HTTP/1.1\r\nHost: test.local\r\nX-API-Key: {{K}}\r\n\r\n"))

    def test_bare_lf_line_endings(self):
        self.reject(self.R("GET /a HTTP/1.1\nHost: test.local\nX-API-Key: {K}\n\n"), smuggle=False)
        self.reject(self.R("GET /a HTTP/1.1\r\nHost: test.local\nX-API-Key: {K}\r\n\r\n"))
        self.reject(self.R("GET /a HTTP/1.1\nHost: test.local\r\nX-API-Key: {K}\r\n\r\n"))

    # ----------------------------------------------------------------- limits

    def test_head_over_max_header_bytes(self):
        self.reject(self.R("GET /a HTTP/1.1\r\nHost: test.local\r\nX-API-Key: {K}\r\nX-Fill: "
                           + "a" * (MAX_HEADER_BYTES + 100) + "\r\n\r\n"), 431, "header_too_large",
                    smuggle=False)
        self.reject(self.R("GET /" + "a" * (MAX_HEADER_BYTES + 100)
                           + " HTTP/1.1\r\nHost: test.local\r\nX-API-Key: {K}\r\n\r\n"),
                    431, "header_too_large", smuggle=False)
        # A big head that never ends is cut off too (not buffered until the timeout).
        self.reject(self.R("GET /a HTTP/1.1\r\nHost: test.local\r\nX-API-Key: {K}\r\n"
                           + "X-Fill: b\r\n" * 5000), 431, "header_too_large", smuggle=False)

    def test_head_under_max_header_bytes(self):
        self.accept(self.R("GET /ok HTTP/1.1\r\nHost: test.local\r\nX-API-Key: {K}\r\nX-Fill: "
                           + "a" * (MAX_HEADER_BYTES - 300) + "\r\n\r\n"))

    def test_too_many_fields(self):
        fill = "".join(f"X-F{i}: {i}\r\n" for i in range(MAX_HEADERS - 1))  # + Host + key = max+1
        self.reject(self.R("GET /a HTTP/1.1\r\nHost: test.local\r\nX-API-Key: {K}\r\n" + fill + "\r\n"),
                    431, "header_too_large", smuggle=False)

    def test_exactly_max_fields(self):
        fill = "".join(f"X-F{i}: {i}\r\n" for i in range(MAX_HEADERS - 2))  # + Host + key = max
        self.accept(self.R("GET /ok HTTP/1.1\r\nHost: test.local\r\nX-API-Key: {K}\r\n" + fill + "\r\n"))

    # ----------------------------------------------------------------- chunked bodies

    def chunked_head(self, target="/a"):
        return self.R(f"POST {target} HTTP/1.1\r\nHost: test.local\r\nX-API-Key: {{K}}\r\n"
                      "Transfer-Encoding: chunked\r\n\r\n")

    def test_malformed_chunk_size(self):
        for body in (b"zz\r\nhello\r\n0\r\n\r\n", b"0x5\r\nhello\r\n0\r\n\r\n",
                     b"-5\r\nhello\r\n0\r\n\r\n", b"\r\nhello\r\n0\r\n\r\n",
                     b" 5\r\nhello\r\n0\r\n\r\n", b"5\r\nhelloXX0\r\n\r\n",
                     b"5\nhello\n0\n\n", b"3\r\nhello\r\n0\r\n\r\n"):
            with self.subTest(body=body):
                self.reject(self.chunked_head() + body, nothing_upstream=False)

    def test_huge_chunk_size(self):
        with h.Client(self.kg.port) as c:
            c.send(self.chunked_head() + b"fffffffffffffffff\r\nhello")
            r = c.read_response()
            self.assertIn(r.status, (400, 413), r)
            self.assertTrue(r.has_close())
            self.assertClosed(c)
        time.sleep(0.2)
        self.assertEqual(self.up.requests, [])
        self.canary()

    def test_chunk_extensions_not_forwarded(self):
        u = self.accept(self.chunked_head("/ok") + b"5;ext=secretext\r\nhello\r\n6;a=b;c\r\n world\r\n0;z\r\n\r\n",
                        body=b"hello world")
        self.assertEqual(u.chunk_extensions, [])
        self.assertNotIn(b"secretext", self.up.raw_bytes())

    def test_trailers_discarded(self):
        u = self.accept(self.chunked_head("/ok") + self.R(
            "5\r\nhello\r\n0\r\nX-Trail: v\r\nX-API-Key: {K}\r\nX-Keygate-Key-Id: forged\r\n\r\n"),
            body=b"hello")
        self.assertEqual(u.trailers, [])
        raw = self.up.raw_bytes()
        self.assertNotIn(b"X-Trail", raw)
        self.assertNotIn(b"forged", raw)

    def test_key_in_trailer_is_not_a_credential(self):
        with h.Client(self.kg.port) as c:
            c.send(self.R("POST /a HTTP/1.1\r\nHost: test.local\r\nTransfer-Encoding: chunked\r\n\r\n"
                          "5\r\nhello\r\n0\r\nX-API-Key: {K}\r\n\r\n"))
            r = c.read_response()
            self.assertError(r, 401, "missing_api_key", close=True)
            self.assertClosed(c)
        self.assertNothingForwarded()

    def test_trailers_over_header_limit(self):
        for trailers in (b"X-Junk: " + b"j" * (MAX_HEADER_BYTES + 100) + b"\r\n",
                         b"".join(b"X-Junk%d: j\r\n" % i for i in range(2000))):
            with self.subTest(size=len(trailers)), h.Client(self.kg.port) as c:
                c.try_send(self.chunked_head() + b"5\r\nhello\r\n0\r\n" + trailers + b"\r\n"
                                + self.smuggled)
                try:
                    r = c.read_response()
                    self.assertError(r, 431, "header_too_large", close=True)
                except h.Closed:
                    pass  # closing without an answer is allowed too
                self.assertTrue(c.wait_closed(3.5), "connection still open")
            time.sleep(0.2)
            self.assertEqual(self.up.requests, [], "a request with oversized trailers completed upstream")
            raw = self.up.raw_bytes()
            self.assertNotIn(b"X-Junk", raw)
            self.assertNotIn(b"/smuggled", raw)
            self.canary()
            self.up.reset()

    # ----------------------------------------------------------------- lingering close

    def linger(self, junk: bytes, interval: float, limit: float = 6.0) -> float:
        """After a 400, keeps sending `junk` every `interval` s; returns how long until a
        send fails (keygate fully closed the connection)."""
        with h.Client(self.kg.port, timeout=10) as c:
            c.send(self.R("GET /%2F HTTP/1.1\r\nHost: test.local\r\nX-API-Key: {K}\r\n\r\n"))
            r = c.read_response()
            self.assertError(r, 400, "bad_request", close=True)
            t0 = time.monotonic()
            while time.monotonic() - t0 < limit:
                if not c.try_send(junk):
                    return time.monotonic() - t0
                time.sleep(interval)
            return time.monotonic() - t0

    def test_lingering_close_bounded_in_time(self):
        elapsed = self.linger(b"j" * 100, 0.05)
        self.assertLess(elapsed, 3.0, "keygate kept reading a trickling client past 2 s after a 400")

    def test_lingering_close_bounded_in_bytes(self):
        elapsed = self.linger(b"j" * 16384, 0.001)
        self.assertLess(elapsed, 1.5, "keygate kept discarding far more than 64 KiB after a 400")

    # ----------------------------------------------------------------- pipelining

    def test_pipelined_after_400_never_forwarded(self):
        second = self.R("GET /second HTTP/1.1\r\nHost: test.local\r\nX-API-Key: {K}\r\n\r\n")
        for first in (self.R("GET /a/%2F HTTP/1.1\r\nHost: test.local\r\nX-API-Key: {K}\r\n\r\n"),
                      self.R("GET /a HTTP/1.1\r\nX-API-Key: {K}\r\n\r\n"),
                      self.R("POST /a HTTP/1.1\r\nHost: test.local\r\nX-API-Key: {K}\r\n"
                             "Content-Length: 3\r\nContent-Length: 3\r\n\r\nabc")):
            with h.Client(self.kg.port) as c:
                c.send(first + second)
                r = c.read_response()
                self.assertError(r, 400, "bad_request", close=True)
                self.assertClosed(c)
            self.assertNothingForwarded()
        self.canary()

    def test_valid_pipelined_requests(self):
        with h.Client(self.kg.port) as c:
            c.send(self.R("GET /p1 HTTP/1.1\r\nHost: test.local\r\nX-API-Key: {K}\r\n\r\n"
                          "POST /echo HTTP/1.1\r\nHost: test.local\r\nX-API-Key: {K}\r\n"
                          "Content-Length: 3\r\n\r\nabc"
                          "POST /echo HTTP/1.1\r\nHost: test.local\r\nX-API-Key: {K}\r\n"
                          "Transfer-Encoding: chunked\r\n\r\n2\r\nde\r\n0\r\n\r\n"
                          "GET /p4 HTTP/1.1\r\nHost: test.local\r\nX-API-Key: {K}\r\n\r\n"))
            r1, r2, r3, r4 = (c.read_response() for _ in range(4))
        self.assertEqual([r.status for r in (r1, r2, r3, r4)], [200] * 4)
        self.assertEqual(r1.json()["target"], "/p1")
        self.assertEqual(r2.body, b"abc")
        self.assertEqual(r3.body, b"de")
        self.assertEqual(r4.json()["target"], "/p4")
        reqs = self.up.wait_requests(4)
        self.assertEqual([u.target for u in reqs], ["/p1", "/echo", "/echo", "/p4"])
        self.assertEqual([bytes(u.body) for u in reqs], [b"", b"abc", b"de", b""])

    def test_valid_then_invalid_pipelined(self):
        with h.Client(self.kg.port) as c:
            c.send(self.R("GET /p1 HTTP/1.1\r\nHost: test.local\r\nX-API-Key: {K}\r\n\r\n"
                          "GET /%2F HTTP/1.1\r\nHost: test.local\r\nX-API-Key: {K}\r\n\r\n"
                          "GET /p3 HTTP/1.1\r\nHost: test.local\r\nX-API-Key: {K}\r\n\r\n"))
            r1 = c.read_response()
            self.assertEqual(r1.status, 200)
            r2 = c.read_response()
            self.assertError(r2, 400, "bad_request", close=True)
            self.assertClosed(c)
        self.assertEqual([u.target for u in self.up.wait_requests(1)], ["/p1"])
        self.assertEqual(len(self.up.heads), 1)


if __name__ == "__main__":
    h.main()
