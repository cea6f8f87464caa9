# Managed by packer-plugin-wsgi. Read by every wsgi@N.service; values come from the Stack.
import glob
import os

# Resolve the release once, at start: a unit keeps serving one release until it is restarted,
# even while first boot or a deploy switches /srv/wsgi/current.
release = os.path.realpath("/srv/wsgi/current")
chdir = release
# The release's own venv (built at first boot) comes first, then the release itself.
pythonpath = ",".join(sorted(glob.glob(release + "/.venv/lib/python3*/site-packages")) + [release])

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

# Only NGINX can reach the socket (mode 0660, NGINX's group), so its forwarded headers are trusted.
forwarded_allow_ips = "*"
proxy_allow_ips = "*"

# Logs go to the journal through stdout and stderr. NGINX logs every request already; Gunicorn's
# access log is opt-in (gunicorn_access_log) since a second line per request costs throughput.
accesslog = None
errorlog = "-"
loglevel = os.environ.get("WSGI_LOG_LEVEL", "info")
access_log_format = '%({x-forwarded-for}i)s "%(r)s" %(s)s %(b)s %(D)sus unit=' + os.environ.get("WSGI_UNIT", "?")

# Worker heartbeat files on the unit's private, memory-backed runtime directory.
worker_tmp_dir = os.environ.get("RUNTIME_DIRECTORY", "/tmp")
