#!/usr/bin/python3
"""Boot tests: a stand-in for a Sentry server. Accepts POSTs on
127.0.0.1:PORT and appends one JSON line per request (path, the
X-Sentry-Auth header, the body) to FILE; answers 200 with an event id.

usage: sentry-sink.py PORT FILE
"""
import http.server
import json
import sys


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        n = min(int(self.headers.get("Content-Length", "0")), 1 << 20)
        body = self.rfile.read(n).decode("utf-8", "replace")
        with open(sys.argv[2], "a", encoding="utf-8") as f:
            f.write(json.dumps({"path": self.path,
                                "auth": self.headers.get("X-Sentry-Auth", ""),
                                "body": body}) + "\n")
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"id": "0"}')

    def log_message(self, *args):
        pass


http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
