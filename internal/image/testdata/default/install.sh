#!/bin/sh
# Managed by packer-plugin-wsgi. Bake-time install of the WSGI stack; run as root with the
# staging folder (the rendered files under their absolute paths) as the only argument.
# Safe to run again: every step checks before it changes anything.
set -eu

STAGE=${1:?usage: install.sh STAGING_DIR}
export DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8

phase() { echo "==> wsgi-stack: $*"; }
die() { echo "wsgi-stack: error: $*" >&2; exit 1; }

phase "packages"
command -v apt-get >/dev/null 2>&1 || die 'apt-get not found: this machine is not of the apt family (distro_family = "apt")'
missing=""
for p in 'nginx' 'curl' 'ca-certificates' 'python3' 'python3-venv'; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
	# shellcheck disable=SC2086 # one word per package name
	apt-get update -q && apt-get install -y -q --no-install-recommends $missing
fi

phase 'user wsgi'
getent group 'wsgi' >/dev/null || groupadd --system 'wsgi'
id -u 'wsgi' >/dev/null 2>&1 || useradd --system --gid 'wsgi' --home-dir '/srv/wsgi' --no-create-home --shell /usr/sbin/nologin 'wsgi'
getent group 'www-data' >/dev/null || die 'group www-data (NGINX'\''s user) is missing after installing NGINX'

phase "directories"
# Code is owned by root and only readable by the app: a compromised worker cannot rewrite it.
install -d -m 0755 -o root -g root '/srv/wsgi' '/srv/wsgi/releases' '/usr/share/wsgi' '/var/lib/wsgi'
install -d -m 0750 -o root -g 'wsgi' '/etc/wsgi'
# The app's state (StateDirectory=wsgi-app), made now so first-boot hooks can write to it too.
install -d -m 0750 -o 'wsgi' -g 'wsgi' '/var/lib/wsgi-app'
[ -e '/etc/wsgi/wsgi.env' ] || install -m 0640 -o root -g 'wsgi' /dev/null '/etc/wsgi/wsgi.env'

phase 'python venv /opt/wsgi/venv'
# Every pip of the bake: no prompts, no version check, no cache left in the image, no progress bar.
PIP_QUIET="--no-input --disable-pip-version-check --no-cache-dir --progress-bar off"
if [ ! -x '/opt/wsgi/venv/bin/python' ]; then
	'python3' -m venv '/opt/wsgi/venv'
fi
if [ "$('/opt/wsgi/venv/bin/python' -c 'import gunicorn; print(gunicorn.__version__)' 2>/dev/null || true)" != '23.0.0' ]; then
	# shellcheck disable=SC2086 # one word per option
	'/opt/wsgi/venv/bin/python' -m pip install --quiet $PIP_QUIET 'gunicorn==23.0.0'
fi
'/opt/wsgi/venv/bin/python' -c 'import gunicorn, sys; print("gunicorn", gunicorn.__version__, "on python", sys.version.split()[0])' \
	|| die 'gunicorn is not importable from /opt/wsgi/venv/bin/python'
# First boot installs a release's requirements with this pip into a venv without pip of its own
# (pip --python, pip 22.3 and later): copying pip into every release venv is most of a deploy.
'/opt/wsgi/venv/bin/python' -m pip --version >/dev/null 2>&1 || die 'pip is not in /opt/wsgi/venv/bin/python: first boot installs requirements with it'

phase "files"
install -D -m 0644 -o root -g 'root' "$STAGE"'/etc/systemd/system/wsgi@.socket' '/etc/systemd/system/wsgi@.socket'
install -D -m 0644 -o root -g 'root' "$STAGE"'/etc/systemd/system/wsgi@.service' '/etc/systemd/system/wsgi@.service'
install -D -m 0644 -o root -g 'root' "$STAGE"'/etc/systemd/system/wsgi.target' '/etc/systemd/system/wsgi.target'
install -D -m 0644 -o root -g 'root' "$STAGE"'/etc/systemd/system-preset/50-wsgi.preset' '/etc/systemd/system-preset/50-wsgi.preset'
install -D -m 0640 -o root -g 'wsgi' "$STAGE"'/etc/wsgi/gunicorn.conf.py' '/etc/wsgi/gunicorn.conf.py'
install -D -m 0644 -o root -g 'root' "$STAGE"'/etc/nginx/conf.d/wsgi.conf' '/etc/nginx/conf.d/wsgi.conf'
install -D -m 0644 -o root -g 'root' "$STAGE"'/etc/nginx/wsgi_proxy_params' '/etc/nginx/wsgi_proxy_params'
install -D -m 0644 -o root -g 'root' "$STAGE"'/etc/nginx/nginx.conf' '/etc/nginx/nginx.conf'
install -D -m 0644 -o root -g 'root' "$STAGE"'/etc/systemd/system/nginx.service.d/50-wsgi-hardening.conf' '/etc/systemd/system/nginx.service.d/50-wsgi-hardening.conf'
install -D -m 0644 -o root -g 'root' "$STAGE"'/usr/share/wsgi/maintenance.html' '/usr/share/wsgi/maintenance.html'
install -D -m 0755 -o root -g 'root' "$STAGE"'/usr/local/sbin/wsgi-deploy' '/usr/local/sbin/wsgi-deploy'
install -D -m 0755 -o root -g 'root' "$STAGE"'/usr/local/sbin/wsgi-ctl' '/usr/local/sbin/wsgi-ctl'
install -D -m 0755 -o root -g 'root' "$STAGE"'/usr/local/lib/wsgi/wsgi-aws' '/usr/local/lib/wsgi/wsgi-aws'
install -D -m 0644 -o root -g 'root' "$STAGE"'/usr/local/lib/wsgi/wsgi-migrate' '/usr/local/lib/wsgi/wsgi-migrate'
install -D -m 0644 -o root -g 'root' "$STAGE"'/etc/wsgi-stack.json' '/etc/wsgi-stack.json'
rm -f '/etc/nginx/sites-enabled/default'
# The request signer runs on the system's python3 at first boot: prove it starts here.
/usr/bin/python3 -IS "$STAGE"/usr/local/lib/wsgi/wsgi-aws --help >/dev/null || die "/usr/local/lib/wsgi/wsgi-aws does not run on this machine's /usr/bin/python3"
# The fleet-wide migrate runs in the app's venv, on this python3: prove it parses here.
/usr/bin/python3 -IS -c 'import ast, sys; ast.parse(open(sys.argv[1]).read())' "$STAGE"/usr/local/lib/wsgi/wsgi-migrate ||
	die "/usr/local/lib/wsgi/wsgi-migrate does not parse on this machine's /usr/bin/python3"

phase "units"
systemctl daemon-reload
# Installed, not enabled: first boot enables wsgi.target once a release is in place.
for u in 'wsgi.target' 'wsgi@1.socket' 'wsgi@2.socket' 'wsgi@3.socket'; do
	systemctl is-enabled --quiet "$u" 2>/dev/null && die "$u is enabled; the baked image must not serve before first boot" || true
done

phase "nginx"
nginx -t -q
systemctl enable --quiet nginx
# A restart, not a reload: the sandbox of nginx.service.d applies only when NGINX starts.
systemctl restart nginx

phase "done"
