#!/usr/bin/env python3
"""A demo upstream for keygate.

Answers every method on every path with a JSON document that echoes the
method, the path and the request headers it received, so you can see what
keygate forwards: the X-Keygate-* identity headers it adds, X-Forwarded-*,
X-Request-Id, and the absence of the API key header it strips.

Usage: demo-upstream.py [PORT]   (listens on 127.0.0.1, default port 3000)
"""

import json
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class EchoHandler(BaseHTTPRequestHandler):
    """Echo the request line and headers back as JSON, keeping the connection alive."""

    protocol_version = "HTTP/1.1"

    def version_string(self):
        return "keygate-demo-upstream"

    def handle_one_request(self):
        # Dispatch every method, known or not, to the same echo.
        self.raw_requestline = self.rfile.readline(65537)
        if len(self.raw_requestline) > 65536:
            self.send_error(414)
            return
        if not self.raw_requestline:
            self.close_connection = True
            return
        if not self.parse_request():
            return
        try:
            body = self.read_body()
        except ValueError:
            self.send_error(400, "bad request body framing")
            self.close_connection = True
            return
        self.echo(body)
        self.wfile.flush()

    def read_body(self):
        """Read and return the request body (Content-Length or chunked)."""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = bytearray()
            while True:
                size_line = self.rfile.readline(1024)
                size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    # Skip trailers up to the blank line.
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(body)
                body += self.rfile.read(size)
                self.rfile.readline(3)
        length = int(self.headers.get("Content-Length", "0") or "0")
        return self.rfile.read(length) if length > 0 else b""

    def echo(self, body):
        """Answer 200 with the method, path and headers as JSON."""
        headers = {}
        for name, value in self.headers.items():
            # A repeated field is shown once, its values joined as HTTP would.
            headers[name] = headers[name] + ", " + value if name in headers else value
        document = {
            "method": self.command,
            "path": self.path,
            "headers": headers,
            "body_bytes": len(body),
        }
        payload = (json.dumps(document, indent=2) + "\n").encode("utf-8")
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def log_message(self, format, *args):
        sys.stderr.write("demo-upstream: %s %s\n" % (self.address_string(), format % args))


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    server = ThreadingHTTPServer(("127.0.0.1", port), EchoHandler)
    server.daemon_threads = True
    # Stop quietly on SIGTERM, as on Ctrl-C.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    sys.stderr.write("demo-upstream: listening on http://127.0.0.1:%d\n" % port)
    try:
        server.serve_forever()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
