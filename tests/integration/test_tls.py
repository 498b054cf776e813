#!/usr/bin/env python3
"""TLS: the HTTPS listener (listen.tls), certificate reload, and HTTPS upstreams with
verification (upstream.tls) (DESIGN.md §2, §3 listen.tls/upstream.tls, §5 SIGHUP).

Certificates are made with the `openssl` command line in a temporary directory: one test
CA, and leaf certificates signed by it. keygate does not send a TLS close_notify alert
when it closes a connection, so reads here tolerate a bare TCP close after a complete,
framed response (Python's default suppress_ragged_eofs)."""
import http.server
import json
import os
import shutil
import signal
import socket
import socketserver
import ssl
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

SLACK = 0.6


# --------------------------------------------------------------------------- certificates

class Pki:
    """A throw-away CA in `dir` that signs leaf certificates."""

    def __init__(self, dir: str, name: str = "keygate-it-ca"):
        self.dir = dir
        self.ca_key = os.path.join(dir, f"{name}.key")
        self.ca_cert = os.path.join(dir, f"{name}.pem")
        self._run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                  "-nodes", "-keyout", self.ca_key, "-out", self.ca_cert, "-days", "2",
                  "-subj", f"/CN={name}",
                  "-addext", "basicConstraints=critical,CA:TRUE",
                  "-addext", "keyUsage=critical,keyCertSign,cRLSign")

    @staticmethod
    def _run(*args):
        p = subprocess.run(["openssl", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
        if p.returncode != 0:
            raise RuntimeError(f"openssl {' '.join(args)} failed: {p.stderr.decode(errors='replace')}")

    def leaf(self, name: str, cn: str, serial: int, dns=("localhost",), ips=("127.0.0.1",)):
        """Makes `name`.pem / `name`.key; returns (cert path, key path, DER bytes)."""
        key = os.path.join(self.dir, f"{name}.key")
        csr = os.path.join(self.dir, f"{name}.csr")
        cert = os.path.join(self.dir, f"{name}.pem")
        ext = os.path.join(self.dir, f"{name}.ext")
        san = ",".join([f"DNS:{d}" for d in dns] + [f"IP:{i}" for i in ips])
        with open(ext, "w") as f:
            f.write(f"subjectAltName={san}\nbasicConstraints=CA:FALSE\n"
                    "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
                    "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n")
        self._run("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                  "-keyout", key, "-out", csr, "-subj", f"/CN={cn}")
        self._run("x509", "-req", "-in", csr, "-CA", self.ca_cert, "-CAkey", self.ca_key,
                  "-set_serial", str(serial), "-days", "2", "-extfile", ext, "-out", cert)
        with open(cert) as f:
            der = ssl.PEM_cert_to_DER_cert(f.read())
        return cert, key, der


# --------------------------------------------------------------------------- TLS clients

def client_context(cafile: str, min_version=None, max_version=None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=cafile)
    if min_version is not None:
        ctx.minimum_version = min_version
    if max_version is not None:
        ctx.maximum_version = max_version
    return ctx


class TlsClient(h.Client):
    """The harness's raw HTTP client over TLS (server name checked against the cert)."""

    def __init__(self, port: int, ctx: ssl.SSLContext, server_hostname: str = "localhost",
                 timeout: float = 5.0):
        self.port = port
        self.timeout = timeout
        raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        try:
            self.sock = ctx.wrap_socket(raw, server_hostname=server_hostname)
        except BaseException:
            raw.close()
            raise
        self.sock.settimeout(timeout)
        self.bs = h.BufferedSocket(self.sock)

    def peer_der(self) -> bytes:
        return self.sock.getpeercert(binary_form=True)


# --------------------------------------------------------------------------- HTTPS upstream

class HttpsUpstream:
    """A small HTTPS origin (Python's http.server over ssl) that records what it got:
    requests (method, path, headers), the SNI names clients sent, and handshake failures."""

    def __init__(self, cert: str, key: str):
        self.lock = threading.Lock()
        self.requests: list = []
        self.sni: list = []
        self.handshake_errors: list = []
        self.connections = 0
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        ctx.sni_callback = self._on_sni
        self.ctx = ctx
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                with outer.lock:
                    outer.requests.append({"method": self.command, "path": self.path,
                                           "headers": list(self.headers.items())})
                body = json.dumps({"path": self.path, "tls": True}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True
            allow_reuse_address = True

            def finish_request(self, request, client_address):
                # The handshake runs on the connection's own thread.
                try:
                    tls = outer.ctx.wrap_socket(request, server_side=True)
                except (ssl.SSLError, OSError) as e:
                    with outer.lock:
                        outer.handshake_errors.append(repr(e))
                    return
                with outer.lock:
                    outer.connections += 1
                try:
                    Handler(tls, client_address, self)
                except OSError:
                    pass
                finally:
                    try:
                        tls.close()
                    except OSError:
                        pass

            def handle_error(self, request, client_address):
                pass

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1},
                                       daemon=True)
        self.thread.start()

    def _on_sni(self, sslobj, name, ctx):
        with self.lock:
            self.sni.append(name)

    def reset(self):
        with self.lock:
            self.requests, self.sni, self.handshake_errors = [], [], []
            self.connections = 0

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


# --------------------------------------------------------------------------- tests

class TlsTestCase(h.KeygateTestCase):

    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="keygate-it-tls-")
        cls.addClassCleanup(shutil.rmtree, cls.dir, True)
        cls.pki = Pki(cls.dir)
        cls.cert, cls.keyfile, cls.der = cls.pki.leaf("server", "localhost", 1001)
        cls.up = cls.start_upstream()
        cls.key = h.new_key()

    def ctx(self, **kw):
        return client_context(self.pki.ca_cert, **kw)

    def tls_config(self, cert=None, key=None, **tls):
        t = {"cert_file": cert or self.cert, "key_file": key or self.keyfile}
        t.update(tls)
        return h.make_config(self.up.port, keys=[h.key_entry("svc", key=self.key)], listen={"tls": t})

    def https(self, kg, target="/", headers=None, ctx=None, server_hostname="localhost"):
        with TlsClient(kg.port, ctx or self.ctx(), server_hostname) as c:
            return c.request("GET", target, [("X-API-Key", self.key)] if headers is None else headers)


class TlsListenerTest(TlsTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.kg = cls.start_keygate(cls.tls_config(cls))

    def setUp(self):
        self.up.reset()

    def test_https_request_forwarded(self):
        with TlsClient(self.kg.port, self.ctx()) as c:
            self.assertEqual(c.peer_der(), self.der)
            r = c.request("GET", "/secure?x=1", [("X-API-Key", self.key), ("X-Forwarded-Proto", "http")])
            self.assertEqual(r.status, 200, r)
            # Keep-alive works over TLS.
            r = c.request("GET", "/second", [("X-API-Key", self.key)])
            self.assertEqual(r.status, 200, r)
        reqs = self.up.wait_requests(2)
        self.assertEqual([u.target for u in reqs], ["/secure?x=1", "/second"])
        for u in reqs:
            self.assertEqual(u.header_all("X-Forwarded-Proto"), ["https"])
            self.assertEqual(u.header("X-Keygate-Key-Id"), "svc")
            self.assertFalse(u.has("X-API-Key"))
        self.assertUpstreamClean()

    def test_ip_address_name_verified(self):
        r = self.https(self.kg, "/by-ip", server_hostname="127.0.0.1")
        self.assertEqual(r.status, 200, r)

    def test_denial_over_tls(self):
        r = self.https(self.kg, "/x", headers=[])
        self.assertError(r, 401, "missing_api_key")
        self.assertNothingForwarded()

    def test_plain_http_to_tls_port_is_closed(self):
        with h.Client(self.kg.port) as c:
            c.send(h.build_request("GET", "/plain", [("X-API-Key", self.key)]))
            self.assertTrue(c.wait_closed(3), "plain HTTP on the TLS port left the connection open")
            self.assertNotIn(b"HTTP/", c.pending(), "an HTTP response was sent in clear text")
        self.assertNothingForwarded()
        self.assertTrue(self.kg.alive())
        r = self.https(self.kg, "/after-plain")
        self.assertEqual(r.status, 200, r)

    def test_untrusted_client_side_sees_our_certificate(self):
        # A client that does not trust the test CA refuses the handshake: the served
        # certificate really is the configured one, not a default.
        with self.assertRaises(ssl.SSLCertVerificationError):
            TlsClient(self.kg.port, ssl.create_default_context())
        self.assertTrue(self.kg.alive())

    def test_tls12_accepted_by_default(self):
        with TlsClient(self.kg.port, self.ctx(max_version=ssl.TLSVersion.TLSv1_2)) as c:
            self.assertEqual(c.sock.version(), "TLSv1.2")
            self.assertEqual(c.request("GET", "/v12", [("X-API-Key", self.key)]).status, 200)

    def test_websocket_over_tls(self):
        with TlsClient(self.kg.port, self.ctx()) as c:
            c.send(h.build_request("GET", "/ws", [("X-API-Key", self.key), ("Connection", "Upgrade"),
                                                  ("Upgrade", "websocket"),
                                                  ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
                                                  ("Sec-WebSocket-Version", "13")]))
            r = c.read_response()
            self.assertEqual(r.status, 101, r)
            for msg in (b"first", b"second message", b"x" * 5000):
                c.send(msg)
                deadline = time.monotonic() + 3
                got = b""
                while len(got) < len(msg):
                    part = c.bs.read_some(deadline)
                    self.assertTrue(part, "tunnel closed")
                    got += part
                self.assertEqual(got, msg.upper())
        self.assertEqual(self.up.wait_heads(1)[0].header("X-Forwarded-Proto"), "https")


class TlsVersionTest(TlsTestCase):

    def test_min_version_13_refuses_tls12_client(self):
        with h.Keygate(self.tls_config(min_version="1.3")) as kg:
            with self.assertRaises(ssl.SSLError):
                TlsClient(kg.port, self.ctx(max_version=ssl.TLSVersion.TLSv1_2))
            self.assertTrue(kg.alive())
            with TlsClient(kg.port, self.ctx()) as c:
                self.assertEqual(c.sock.version(), "TLSv1.3")
                self.assertEqual(c.request("GET", "/v13", [("X-API-Key", self.key)]).status, 200)
        self.assertEqual([u.target for u in self.up.wait_requests(1)], ["/v13"])


class TlsStartupErrorTest(TlsTestCase):

    def run_failing(self, cfg):
        kg = h.Keygate(cfg, wait_ready=False)
        try:
            kg.start()
            try:
                code = kg.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.fail(f"keygate kept running; stderr:\n{kg.stderr()}")
            err = kg.stderr()
            self.assertEqual(code, h.EX_CONFIG, err)
            lines = [l for l in err.splitlines() if l.strip()]
            self.assertTrue(lines)
            for l in lines:
                self.assertTrue(l.startswith("keygate: "), l)
            self.assertFalse(h.port_accepts(cfg["listen"]["port"]))
            return err
        finally:
            kg.stop()
            kg.cleanup()

    def test_missing_cert_file(self):
        missing = os.path.join(self.dir, "no-such-cert.pem")
        err = self.run_failing(self.tls_config(cert=missing))
        self.assertIn("listen.tls.cert_file", err)

    def test_garbage_cert_file(self):
        garbage = os.path.join(self.dir, "garbage.pem")
        with open(garbage, "w") as f:
            f.write("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")
        err = self.run_failing(self.tls_config(cert=garbage))
        self.assertIn("listen.tls.cert_file", err)

    def test_bad_key_file(self):
        _, other_key, _ = self.pki.leaf("unrelated", "unrelated", 3003)
        err = self.run_failing(self.tls_config(key=other_key))
        self.assertIn("listen.tls.key_file", err)
        err = self.run_failing(self.tls_config(key=os.path.join(self.dir, "no-such-key.pem")))
        self.assertIn("listen.tls.key_file", err)

    def test_invalid_min_version(self):
        for v in ("1.1", "1.0", "tls1.3"):
            err = self.run_failing(self.tls_config(min_version=v))
            self.assertIn("listen.tls.min_version", err)

    def test_check_config_loads_tls_files(self):
        # check-config validates everything startup validates (DESIGN.md §4), TLS files included.
        bad_listen = self.tls_config(cert=os.path.join(self.dir, "no-such-cert.pem"))
        bad_ca = h.make_config(self.up.port, keys=[h.key_entry("svc", key=self.key)],
                               upstream={"url": "https://localhost:8443",
                                         "tls": {"ca_file": os.path.join(self.dir, "no-such-ca.pem")}})
        for cfg, needle in ((bad_listen, "listen.tls.cert_file"), (bad_ca, "upstream.tls.ca_file")):
            kg = h.Keygate(cfg)
            try:
                p = h.run_cli(["check-config", "--config", kg.config_path])
                self.assertEqual(p.returncode, h.EX_CONFIG, f"check-config accepted a config startup "
                                 f"refuses ({needle}):\n{p.stdout}{p.stderr}")
                self.assertIn(needle, p.stderr)
            finally:
                kg.cleanup()
        good = self.tls_config()
        kg = h.Keygate(good)
        try:
            p = h.run_cli(["check-config", "--config", kg.config_path])
            self.assertEqual(p.returncode, 0, p.stderr)
        finally:
            kg.cleanup()


class CertificateReloadTest(TlsTestCase):

    def setUp(self):
        self.up.reset()
        self.live = tempfile.mkdtemp(prefix="keygate-it-live-", dir=self.dir)
        self.live_cert = os.path.join(self.live, "tls.crt")
        self.live_key = os.path.join(self.live, "tls.key")
        self.install(self.cert, self.keyfile)

    def install(self, cert, key, only=None):
        """Copies a pair over the files keygate reads (each by an atomic rename)."""
        for src, dst, which in ((key, self.live_key, "key"), (cert, self.live_cert, "cert")):
            if only is not None and which != only:
                continue
            tmp = dst + ".tmp"
            shutil.copyfile(src, tmp)
            os.replace(tmp, dst)

    def served(self, kg):
        with TlsClient(kg.port, self.ctx()) as c:
            der = c.peer_der()
            r = c.request("GET", "/served", [("X-API-Key", self.key)])
            self.assertEqual(r.status, 200, r)
            return der

    def wait_served(self, kg, der, within):
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if self.served(kg) == der:
                return True
            time.sleep(0.05)
        return False

    def start(self, reload_interval):
        cfg = self.tls_config(cert=self.live_cert, key=self.live_key)
        cfg["auth"]["reload_interval"] = reload_interval
        kg = h.Keygate(cfg)
        kg.__enter__()
        self.addCleanup(kg.__exit__, None, None, None)
        return kg

    def test_rotation_picked_up_by_polling(self):
        kg = self.start("300ms")
        self.assertEqual(self.served(kg), self.der)
        cert2, key2, der2 = self.pki.leaf("rotated", "rotated.localhost", 2002)
        self.assertNotEqual(der2, self.der)
        with TlsClient(kg.port, self.ctx()) as old_conn:
            self.assertEqual(old_conn.request("GET", "/before", [("X-API-Key", self.key)]).status, 200)
            self.install(cert2, key2)
            self.assertTrue(self.wait_served(kg, der2, 0.3 * 2 + 0.1 + 2.0),
                            "new certificate not served after reload_interval")
            # Every new connection now gets the new certificate; an open one keeps working.
            for _ in range(3):
                self.assertEqual(self.served(kg), der2)
            self.assertEqual(old_conn.request("GET", "/after", [("X-API-Key", self.key)]).status, 200)
        self.assertTrue(kg.alive())

    def test_half_written_rotation_keeps_serving(self):
        # The key is replaced first and the certificate only later (as a careless copy
        # would): meanwhile the pair does not match, and keygate must keep the old one.
        kg = self.start("300ms")
        cert3, key3, der3 = self.pki.leaf("rotated3", "third.localhost", 3004)
        self.install(cert3, key3, only="key")
        t0 = time.monotonic()
        while time.monotonic() - t0 < 1.2:
            self.assertEqual(self.served(kg), self.der, "a mismatched pair replaced the certificate")
            time.sleep(0.1)
        self.install(cert3, key3, only="cert")
        self.assertTrue(self.wait_served(kg, der3, 3.0), "the completed pair was not picked up")
        # Garbage is ignored too: the last good pair stays in force.
        with open(self.live_cert, "w") as f:
            f.write("garbage\n")
        time.sleep(1.0)
        self.assertEqual(self.served(kg), der3)
        self.assertTrue(kg.alive())

    def test_sighup_reloads_certificate(self):
        kg = self.start("1h")
        cert2, key2, der2 = self.pki.leaf("hup", "hup.localhost", 4005)
        self.install(cert2, key2)
        time.sleep(0.5)
        self.assertEqual(self.served(kg), self.der, "certificate changed with nothing polling")
        kg.proc.send_signal(signal.SIGHUP)
        self.assertTrue(self.wait_served(kg, der2, 2.0), "SIGHUP did not reload the certificate")
        self.assertTrue(kg.alive())


class HttpsUpstreamTest(TlsTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        # The upstream's certificate names only "localhost" (no IP address).
        cert, key, _ = cls.pki.leaf("upstream", "localhost", 5006, dns=("localhost",), ips=())
        cls.hup = HttpsUpstream(cert, key)
        cls.addClassCleanup(cls.hup.stop)

    def setUp(self):
        self.hup.reset()

    def cfg(self, url_host="localhost", environment="production", **tls):
        up = {"url": f"https://{url_host}:{self.hup.port}"}
        if tls:
            up["tls"] = tls
        return h.make_config(self.up.port, keys=[h.key_entry("svc", key=self.key)],
                             environment=environment, upstream=up)

    def through(self, cfg, target="/via-https"):
        with h.Keygate(cfg) as kg:
            return self.req("GET", target, [("X-API-Key", self.key)], port=kg.port)

    def assertForwarded(self, r, target, sni):
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json(), {"path": target, "tls": True})
        got = [q for q in self.hup.requests if q["path"] == target]
        self.assertEqual(len(got), 1, self.hup.requests)
        headers = {k.lower(): v for k, v in got[0]["headers"]}
        self.assertEqual(headers.get("x-keygate-key-id"), "svc")
        self.assertEqual(headers.get("host"), "test.local", "Host passes unchanged")
        self.assertNotIn("x-api-key", headers)
        self.assertIn(sni, self.hup.sni)

    def assertRefused(self, r):
        self.assertError(r, 502, "upstream_unavailable")
        self.assertEqual(self.hup.requests, [], "a request crossed an unverified connection")
        self.assertEqual(self.hup.connections, 0, "a TLS handshake with an unverified upstream completed")

    def test_unknown_ca_is_502(self):
        # Not in the system store: refused, and counted as a failure to connect.
        with h.Keygate(self.cfg()) as kg:
            self.assertRefused(self.req("GET", "/x", [("X-API-Key", self.key)], port=kg.port))
            text = self.req("GET", "/metrics", port=kg.config["admin"]["port"]).body.decode()
            self.assertIn('keygate_upstream_errors_total{kind="connect"} 1\n', text)

    def test_ca_file_trusts_upstream(self):
        cfg = self.cfg(ca_file=self.pki.ca_cert)
        with h.Keygate(cfg) as kg:
            for i in range(3):
                r = self.req("GET", f"/ok{i}", [("X-API-Key", self.key)], port=kg.port)
                self.assertForwarded(r, f"/ok{i}", "localhost")
        self.assertEqual(set(self.hup.sni), {"localhost"})
        self.assertEqual(self.hup.connections, 1, "the TLS upstream connection was not reused")

    def test_host_checked_against_url_host(self):
        # https://127.0.0.1 with a certificate that names only localhost: refused.
        self.assertRefused(self.through(self.cfg(url_host="127.0.0.1", ca_file=self.pki.ca_cert)))

    def test_server_name_overrides_sni_and_check(self):
        cfg = self.cfg(url_host="127.0.0.1", ca_file=self.pki.ca_cert, server_name="localhost")
        self.assertForwarded(self.through(cfg, "/named"), "/named", "localhost")

    def test_ip_address_url_checked_against_certificate_ip(self):
        cert, key, _ = self.pki.leaf("upstream-ip", "upstream-ip", 5107, dns=("localhost",), ips=("127.0.0.1",))
        ip_up = HttpsUpstream(cert, key)
        self.addCleanup(ip_up.stop)
        cfg = h.make_config(self.up.port, keys=[h.key_entry("svc", key=self.key)],
                            upstream={"url": f"https://127.0.0.1:{ip_up.port}",
                                      "tls": {"ca_file": self.pki.ca_cert}})
        r = self.through(cfg, "/by-ip")
        self.assertEqual(r.status, 200, r)
        self.assertEqual([q["path"] for q in ip_up.requests], ["/by-ip"])
        self.assertEqual(ip_up.sni, [None], "SNI must not carry an IP address")

    def test_wrong_server_name_is_502(self):
        cfg = self.cfg(ca_file=self.pki.ca_cert, server_name="wrong.example")
        self.assertRefused(self.through(cfg))
        self.assertIn("wrong.example", self.hup.sni, "server_name is not what was sent as SNI")

    def test_other_ca_is_502(self):
        other = Pki(tempfile.mkdtemp(prefix="other-ca-", dir=self.dir), "other-ca")
        self.assertRefused(self.through(self.cfg(ca_file=other.ca_cert)))

    def test_ca_file_reloaded_when_it_changes(self):
        # Start trusting an unrelated CA (502), then put the right CA into the same file:
        # after reload_interval the upstream is trusted without a restart.
        other = Pki(tempfile.mkdtemp(prefix="other-ca-", dir=self.dir), "other-ca-2")
        ca = os.path.join(tempfile.mkdtemp(prefix="ca-live-", dir=self.dir), "ca.pem")
        shutil.copyfile(other.ca_cert, ca)
        cfg = self.cfg(ca_file=ca)
        cfg["auth"]["reload_interval"] = "300ms"
        with h.Keygate(cfg) as kg:
            self.assertRefused(self.req("GET", "/before", [("X-API-Key", self.key)], port=kg.port))
            shutil.copyfile(self.pki.ca_cert, ca + ".tmp")
            os.replace(ca + ".tmp", ca)
            deadline = time.monotonic() + 3.0
            status = None
            while time.monotonic() < deadline:
                status = self.req("GET", "/after", [("X-API-Key", self.key)], port=kg.port).status
                if status == 200:
                    break
                time.sleep(0.1)
            self.assertEqual(status, 200, "a replaced upstream.tls.ca_file was not reloaded")

    def test_plain_http_upstream_behind_https_url_is_502(self):
        cfg = h.make_config(self.up.port, keys=[h.key_entry("svc", key=self.key)],
                            upstream={"url": f"https://127.0.0.1:{self.up.port}",
                                      "tls": {"ca_file": self.pki.ca_cert}})
        with h.Keygate(cfg) as kg:
            r = self.req("GET", "/x", [("X-API-Key", self.key)], port=kg.port)
            self.assertError(r, 502, "upstream_unavailable")
        self.assertEqual(self.up.requests, [])

    def test_verify_false_refused_in_production(self):
        kg = h.Keygate(self.cfg(verify=False), wait_ready=False)
        try:
            kg.start()
            code = kg.proc.wait(10)
            self.assertEqual(code, h.EX_CONFIG, kg.stderr())
            self.assertIn("upstream.tls.verify", kg.stderr())
            self.assertFalse(h.port_accepts(kg.port))
        finally:
            kg.stop()
            kg.cleanup()

    def test_verify_false_allowed_in_development(self):
        # Neither the CA nor the name (127.0.0.1 is not in the certificate) is checked.
        cfg = self.cfg(url_host="127.0.0.1", environment="development", verify=False)
        r = self.through(cfg, "/unverified")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(len(self.hup.requests), 1)

    def test_ca_file_errors(self):
        for ca, needle in ((os.path.join(self.dir, "missing-ca.pem"), "upstream.tls.ca_file"),):
            kg = h.Keygate(self.cfg(ca_file=ca), wait_ready=False)
            try:
                kg.start()
                self.assertEqual(kg.proc.wait(10), h.EX_CONFIG, kg.stderr())
                self.assertIn(needle, kg.stderr())
            finally:
                kg.stop()
                kg.cleanup()


if __name__ == "__main__":
    h.main()
