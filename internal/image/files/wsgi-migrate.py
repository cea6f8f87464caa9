# Managed by packer-plugin-wsgi. The fleet-wide `manage.py migrate` of the baked deploy: every
# instance of a release runs it at first boot, against the same database, and only one of them
# migrates. Installed by wsgi-stack at /usr/local/lib/wsgi/wsgi-migrate; the deploy runs it as the
# app user inside the app's own Django (python manage.py shell -c 'import runpy; ...'), so the
# app's settings, its database driver and its environment are the ones migrate would see.
#
#   1. Nothing to migrate (the plan on the default database is empty): done, no lock taken.
#   2. Otherwise take the database's own lock on a key derived from the app (PostgreSQL:
#      pg_try_advisory_lock on one session, polled; MySQL/MariaDB: GET_LOCK), waiting at most
#      WSGI_MIGRATE_TIMEOUT seconds. The session holds it while migrate runs in a subprocess
#      (with no lock to hold, SQLite or the lock off, migrate runs in this process; into a SQLite
#      file that does not exist yet, without a sync after each migration and one at the end).
#   3. With the lock: read the plan again. Another instance may have migrated while this one
#      waited; then there is nothing left to do. Else run `manage.py migrate --noinput` (or
#      WSGI_MIGRATE_COMMAND), then release. A failed migrate fails this instance; the next one
#      that takes the lock finds the same plan, runs it, and fails the same way.
#
# SQLite has no lock across machines and needs none: its file belongs to one instance. Other
# backends have no lock here: the deploy refuses them unless the lock is off.
#
# Environment (set by the deploy from the app file):
#   WSGI_MANAGE_PY          manage.py, relative to the release (the working folder)
#   WSGI_MIGRATE_LOCK       database (default) or off
#   WSGI_MIGRATE_TIMEOUT    seconds to wait for the lock (default 600)
#   WSGI_MIGRATE_COMMAND    shell command run instead of manage.py migrate --noinput (always run,
#                           under the lock: this helper cannot know what it would migrate)
#   WSGI_COLLECTSTATIC      1: `manage.py collectstatic --noinput` first, in this process (one
#                           Django start-up for both; a failure is reported as wsgi-collectstatic:)
#
# Done, it leaves at once (leave): the app's exit handlers run, but not the interpreter's teardown.
import atexit
import hashlib
import os
import subprocess
import sys
import time


class Failure(Exception):
    pass


class CollectstaticFailure(Exception):
    pass


def say(text):
    print("wsgi-migrate: " + text, flush=True)


def lock_key(settings_module, db_name):
    # A 63-bit key from what names the app's data: the same for every instance of the app.
    digest = hashlib.sha256(("wsgi-migrate\0%s\0%s" % (settings_module, db_name)).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def pending(connection):
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connection)
    return executor.migration_plan(executor.loader.graph.leaf_nodes())


class PostgresLock:
    def __init__(self, cursor, key):
        self.cursor, self.key = cursor, key

    def try_take(self):
        self.cursor.execute("SELECT pg_try_advisory_lock(%s)", [self.key])
        return bool(self.cursor.fetchone()[0])

    def holder(self):
        # The session that holds it, for the log: pid and client address.
        self.cursor.execute(
            "SELECT a.pid, coalesce(host(a.client_addr), 'local') FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
            " WHERE l.locktype = 'advisory' AND l.granted AND ((l.classid::bigint << 32) | l.objid::bigint) = %s LIMIT 1",
            [self.key])
        row = self.cursor.fetchone()
        return "PostgreSQL session %s from %s" % row if row else "another session"

    def release(self):
        self.cursor.execute("SELECT pg_advisory_unlock(%s)", [self.key])


class MySQLLock:
    def __init__(self, cursor, key):
        self.cursor, self.name = cursor, "wsgi-migrate-%016x" % key

    def try_take(self):
        self.cursor.execute("SELECT GET_LOCK(%s, 0)", [self.name])
        got = self.cursor.fetchone()[0]
        if got is None:
            raise Failure("GET_LOCK(%r) returned NULL: the server could not take the lock" % self.name)
        return got == 1

    def holder(self):
        self.cursor.execute("SELECT IS_USED_LOCK(%s)", [self.name])
        row = self.cursor.fetchone()
        return "MySQL connection %s" % row[0] if row and row[0] is not None else "another connection"

    def release(self):
        self.cursor.execute("SELECT RELEASE_LOCK(%s)", [self.name])


LOCKS = {"postgresql": PostgresLock, "mysql": MySQLLock}


def new_sqlite_file(connection):
    """The path of the app's SQLite database when it does not exist yet (or is empty), else None.
    Checked before anything opens the connection, which creates the file."""
    if connection.vendor != "sqlite":
        return None
    name = os.fspath(connection.settings_dict.get("NAME") or "")
    if not name or name == ":memory:" or name.startswith("file:"):
        return None
    try:
        return name if os.stat(name).st_size == 0 else None
    except FileNotFoundError:
        return name


def sync_file(path):
    """fsync the file, then its folder (the file's name is new)."""
    for target, flags in ((path, os.O_RDONLY), (os.path.dirname(os.path.abspath(path)), os.O_RDONLY | os.O_DIRECTORY)):
        fd = os.open(target, flags)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def migrate_here(new_file=None):
    """`manage.py migrate --noinput` in this process, whose Django is set up already: one Django
    start-up fewer than a subprocess, a second or so of a first boot. Only where this process holds
    no lock on its connection (SQLite, the lock off), since migrate uses that connection.

    new_file: a SQLite file this migrate creates. It holds nothing yet, so the migrations skip
    SQLite's sync after each commit (PRAGMA synchronous = OFF: about four fsyncs per commit,
    120 for Django's own apps) and the file is synced once when all of them are applied, before
    the deploy serves from it. Each migration is still its own transaction, rolled back on error;
    only a power loss during this migrate could leave the file broken, on an instance whose first
    boot failed anyway."""
    import traceback

    from django.core.management import call_command
    from django.db import connection

    started = time.monotonic()
    try:
        if new_file:
            say("a new SQLite file: synced once after the last migration, not after each")
            with connection.cursor() as cursor:
                cursor.execute("PRAGMA synchronous = OFF")
        call_command("migrate", interactive=False)
        if new_file:
            connection.close()
            sync_file(new_file)
    except Exception as e:
        traceback.print_exc()
        reason = traceback.format_exception_only(type(e), e)[-1].strip()
        raise Failure("migrate failed after %.1fs: %s" % (time.monotonic() - started, reason[:300]))
    say("migrate finished in %.1fs" % (time.monotonic() - started))


def collectstatic_here():
    """`manage.py collectstatic --noinput` in this process: a Django start-up of its own was as much
    CPU as migrate itself, on a first boot that is short of it."""
    import traceback

    from django.core.management import call_command

    try:
        call_command("collectstatic", interactive=False)
    except Exception as e:
        traceback.print_exc()
        raise CollectstaticFailure(traceback.format_exception_only(type(e), e)[-1].strip()[:300])


def migrate_alone(manage_py, command, new_file=None):
    """Migrates with no lock held: the app file's command in a subprocess, else in this process."""
    if command:
        run_migrate(manage_py, command)
    else:
        migrate_here(new_file)


def run_migrate(manage_py, command):
    if command:
        say("running the migrate command of the app file: " + command)
        argv = ["/bin/sh", "-c", command]
    else:
        argv = [sys.executable, manage_py, "migrate", "--noinput"]
    started = time.monotonic()
    # Its stderr passes through line by line; the last line (the exception, for a failed
    # migration) becomes the reason the deploy reports.
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, errors="replace")
    last = ""
    for line in proc.stderr:
        sys.stderr.write(line)
        sys.stderr.flush()
        if line.strip():
            last = line.strip()
    rc = proc.wait()
    took = time.monotonic() - started
    if rc != 0:
        raise Failure("migrate exited with status %d after %.1fs: %s" % (rc, took, last[:300] or "no error output"))
    say("migrate finished in %.1fs" % took)


def main():
    import django
    from django.conf import settings
    from django.db import connection

    if not settings.configured:
        django.setup()
    manage_py = os.environ.get("WSGI_MANAGE_PY", "manage.py")
    mode = os.environ.get("WSGI_MIGRATE_LOCK", "database")
    timeout = float(os.environ.get("WSGI_MIGRATE_TIMEOUT", "600"))
    command = os.environ.get("WSGI_MIGRATE_COMMAND", "")
    vendor = connection.vendor
    new_file = None if command else new_sqlite_file(connection)
    if os.environ.get("WSGI_COLLECTSTATIC") == "1":
        collectstatic_here()

    if mode == "off":
        say("no fleet lock (django_migrate_lock = \"off\"): migrating on %s as this instance alone" % vendor)
        migrate_alone(manage_py, command, new_file)
        return
    if vendor == "sqlite":
        say("SQLite: the database file is this instance's own, no fleet lock needed")
        migrate_alone(manage_py, command, new_file)
        return
    if vendor not in LOCKS:
        raise Failure("no fleet-wide migration lock for the database backend %s (PostgreSQL and MySQL/MariaDB have one): "
                      "set django_migrate_lock = \"off\" and migrate once per release yourself"
                      % connection.settings_dict.get("ENGINE", vendor))
    if not command:
        started = time.monotonic()
        if not pending(connection):
            say("no migrations to apply (checked in %.2fs): no lock taken" % (time.monotonic() - started))
            return

    key = lock_key(os.environ.get("DJANGO_SETTINGS_MODULE", ""), str(connection.settings_dict.get("NAME")))
    with connection.cursor() as cursor:
        lock = LOCKS[vendor](cursor, key)
        started = time.monotonic()
        waited = False
        while not lock.try_take():
            if not waited:
                say("waiting for the migration lock (key %d), held by %s, at most %ds" % (key, lock.holder(), timeout))
                waited = True
            if time.monotonic() - started >= timeout:
                raise Failure("timed out after %ds waiting for the migration lock (key %d), held by %s: another instance "
                              "is still migrating, or a session left it taken; raise django_migrate_lock_timeout_seconds "
                              "or end that session" % (timeout, key, lock.holder()))
            time.sleep(1)
        say("took the migration lock (key %d) on %s after %.1fs" % (key, vendor, time.monotonic() - started))
        try:
            if not command and not pending(connection):
                say("another instance applied the migrations while this one waited: nothing left to do")
                return
            run_migrate(manage_py, command)
        finally:
            lock.release()
            say("released the migration lock")


def leave():
    """Ends the process as soon as the work is done: the interpreter's teardown of Django's modules
    took a fifth of the helper's time (0.12 s of 0.54 s, bench/firstboot), and a thread that the
    app's settings start and never stop would hold the deploy there for good. The app's exit
    handlers still run (logging's flush among them), the connections are closed and the output is
    flushed first."""
    from django.db import connections

    connections.close_all()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    try:
        main()
        leave()
    except Failure as e:
        print("wsgi-migrate: " + str(e), file=sys.stderr, flush=True)
        sys.exit(1)
    except CollectstaticFailure as e:
        print("wsgi-collectstatic: " + str(e), file=sys.stderr, flush=True)
        sys.exit(1)
