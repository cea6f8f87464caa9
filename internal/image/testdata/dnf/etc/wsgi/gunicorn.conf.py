# Managed by packer-plugin-wsgi. Read by every wsgi@N.service; values come from the Stack.
import glob
import os
import time

# Resolve the release when the master starts and again on every reload (HUP re-reads this file):
# a unit serves one release until it is restarted or reloaded, even while a deploy switches
# /srv/wsgi/current.
release = os.path.realpath("/srv/wsgi/current")
chdir = release
# The release's own venv (built by the deploy) comes first, then the release itself.
release_path = sorted(glob.glob(release + "/.venv/lib/python3*/site-packages")) + [release]
pythonpath = ",".join(release_path)


def post_fork(server, worker):
    """Points a new worker at the release this file resolved at the master's last (re)load.

    Gunicorn applies chdir and pythonpath once, when the master starts; the master never imports
    the app, so after a reload (HUP) a new worker would still import the old release. Here it
    drops the old release from sys.path and puts the resolved one first, so `systemctl reload`
    (and wsgi-ctl reload) brings a new release up worker by worker, with no restart.
    """
    import sys

    # The unit already runs as the app's user (User= in wsgi@.service), so Gunicorn's switch to
    # it would only call setuid(), which the unit's system call filter refuses.
    from gunicorn import util

    if (worker.cfg.uid, worker.cfg.gid) == (os.getuid(), os.getgid()):
        util.set_owner_process = lambda uid, gid, initgroups=False: None

    # A stopping gthread worker (restart, reload) no longer reads its idle keep-alive
    # connections but keeps them open until it exits, so a request NGINX sends on one waits
    # for that exit before it is retried elsewhere. Closing them when the stop begins lets
    # NGINX retry at once (a closed idle connection is dropped from its cache, or fails fast).
    handle_exit = worker.handle_exit

    def close_idle_and_exit(sig, frame):
        handle_exit(sig, frame)
        keep, poller = getattr(worker, "_keep", None), getattr(worker, "poller", None)
        while keep and poller is not None:
            conn = keep.popleft()
            try:
                poller.unregister(conn.sock)
            except (KeyError, ValueError, OSError):
                pass
            conn.close()
            worker.nr_conns -= 1

    worker.handle_exit = close_idle_and_exit

    releases = "/srv/wsgi/releases/"
    sys.path[:] = release_path + [p for p in sys.path if not p.startswith(releases) and p not in release_path]
    os.chdir(release)
    worker.wsgi_forked_at = time.monotonic()


def post_worker_init(worker):
    """Holds a worker that has imported the app while first boot's gate is there.

    A first boot without hooks starts the first unit while Django migrates (wsgi-deploy), so that
    its master starts and its worker imports the app meanwhile; the deploy removes
    /run/wsgi-first-boot.gate once migrate and collectstatic are done. Until then connections wait in the
    socket's backlog.
    Without the gate (every later start, reload or restart) this returns at once. With it, two
    journal lines tell which came last, the app's import or migrate (docs/BENCHMARKS.md).
    """
    gate = "/run/wsgi-first-boot.gate"
    if not os.path.exists(gate):
        return
    held = time.monotonic()
    worker.log.info("app imported in %.2fs; held by first boot's gate %s until migrate and collectstatic are done",
                    held - worker.wsgi_forked_at, gate)
    while os.path.exists(gate):
        if not worker.alive:  # stopped while held: it never serves
            return
        worker.notify()  # the master's timeout counts from the last heartbeat
        time.sleep(0.02)
    worker.log.info("first boot's gate gone after %.2fs: serving", time.monotonic() - held)


# The app entry point (module:callable) is written by first boot into /etc/wsgi/wsgi.env.
wsgi_app = os.environ.get("WSGI_APP", "wsgi:application")

# No bind: the socket is inherited from systemd (LISTEN_FDS), one per unit.
workers = 1
worker_class = "gthread"
threads = 16
timeout = 30
graceful_timeout = 25
keepalive = 75
max_requests = 0
max_requests_jitter = 0
backlog = 2048

# Forwarded headers are trusted from NGINX only. Gunicorn trusts a UNIX-socket peer, and only
# NGINX can connect to the socket (mode 0660, NGINX's group); NGINX writes X-Forwarded-Proto and
# X-Forwarded-For itself and clears the others (see wsgi_proxy_params). No TCP peer is trusted:
# the units bind no TCP port, and were one added, only loopback would count.
forwarded_allow_ips = "127.0.0.1,::1"
proxy_allow_ips = "127.0.0.1,::1"
# Only the header NGINX sets decides https (Gunicorn's default also reads X-Forwarded-Ssl and
# X-Forwarded-Protocol, which NGINX clears anyway).
secure_scheme_headers = {"X-FORWARDED-PROTO": "https"}

# Logs go to the journal through stdout and stderr. NGINX logs every request already; Gunicorn's
# access log is opt-in (gunicorn_access_log) since a second line per request costs throughput.
accesslog = None
errorlog = "-"
loglevel = os.environ.get("WSGI_LOG_LEVEL", "info")
access_log_format = '%({x-forwarded-for}i)s "%(r)s" %(s)s %(b)s %(D)sus unit=' + os.environ.get("WSGI_UNIT", "?")

# Worker heartbeat files on the unit's private, memory-backed runtime directory.
worker_tmp_dir = os.environ.get("RUNTIME_DIRECTORY", "/tmp")
