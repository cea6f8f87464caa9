"""Two WSGI callables for the serving benchmark.

hello: CPU-bound, answers at once. io: waits 20 ms, like a view waiting on its database.
Both say which unit served them (WSGI_UNIT is set by wsgi@.service).
"""
import os
import time

UNIT = os.environ.get("WSGI_UNIT", "eb").encode()


def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello from unit " + UNIT + b"\n"]


def io(environ, start_response):
    time.sleep(0.02)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"waited on unit " + UNIT + b"\n"]
