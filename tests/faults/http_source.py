#!/usr/bin/env python3
"""A misbehaving HTTP source for the fault campaign (tests/faults/run).

Serves the files of DIR on 127.0.0.1:PORT; the first path element picks the behaviour:
  /good/NAME     honours Range (206), as a proper server does;
  /close/NAME    a GET of more than 64 KiB is cut after half its body, one time in CLOSE_EVERY
                 (the connection closes mid-body; a retry can succeed);
  /short/NAME    every GET of more than 64 KiB promises its whole length and sends 1000 bytes
                 fewer, then closes (no retry can succeed: the job must fail clearly);
  /norange/NAME  ignores Range: 200 and the whole file (diskferry must refuse, not misread).
HEAD answers as for a GET. Usage: http_source.py DIR PORT
"""
import http.server
import os
import re
import socketserver
import sys
import threading

BIG = 64 << 10
CLOSE_EVERY = 4
counter = {"n": 0}
lock = threading.Lock()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _target(self):
        parts = self.path.lstrip("/").split("/", 1)
        if len(parts) != 2 or parts[0] not in ("good", "close", "short", "norange"):
            return None, None
        path = os.path.join(DIR, os.path.basename(parts[1]))
        return parts[0], path if os.path.isfile(path) else None

    def _headers(self, head_only):
        mode, path = self._target()
        if path is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        size = os.path.getsize(path)
        start, end = 0, size - 1
        m = re.match(r"bytes=(\d+)-(\d*)$", self.headers.get("Range", ""))
        ranged = m is not None and mode != "norange"
        if ranged:
            start = int(m.group(1))
            end = min(int(m.group(2)) if m.group(2) else size - 1, size - 1)
            self.send_response(206)
            self.send_header("Content-Range", "bytes %d-%d/%d" % (start, end, size))
        else:
            self.send_response(200)
        self.send_header("Accept-Ranges", "none" if mode == "norange" else "bytes")
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("ETag", '"%x-%x"' % (size, int(os.path.getmtime(path))))
        self.end_headers()
        return mode, path, start, end

    def do_HEAD(self):
        self._headers(True)

    def do_GET(self):
        got = self._headers(False)
        if got is None:
            return
        mode, path, start, end = got
        length = end - start + 1
        send = length
        cut = False
        if length > BIG and mode == "short":
            send, cut = length - 1000, True
        elif length > BIG and mode == "close":
            with lock:
                counter["n"] += 1
                if counter["n"] % CLOSE_EVERY == 0:
                    send, cut = length // 2, True
        with open(path, "rb") as f:
            f.seek(start)
            left = send
            while left > 0:
                chunk = f.read(min(left, 1 << 20))
                if not chunk:
                    break
                try:
                    self.wfile.write(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    return
                left -= len(chunk)
        if cut:
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


if __name__ == "__main__":
    DIR, port = sys.argv[1], int(sys.argv[2])
    Server(("127.0.0.1", port), Handler).serve_forever()
