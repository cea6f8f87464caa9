#!/bin/sh
# Managed by packer-plugin-wsgi. Last step of the bake: leave no per-machine state in the image.
# Runs last so the build can still disconnect cleanly: sshd keeps running with the keys it loaded.
set -eu
echo "==> wsgi-stack: image hygiene"
apt-get clean && rm -rf /var/lib/apt/lists/*
rm -f /etc/ssh/ssh_host_*
rm -f /root/.bash_history /home/*/.bash_history
if command -v cloud-init >/dev/null 2>&1; then
	cloud-init clean --logs
fi
# An empty machine-id, not a missing one: systemd gives the next boot a fresh id either way, but a
# missing file makes it a "first boot" that applies unit presets (see 50-wsgi.preset).
: > /etc/machine-id
rm -f /var/lib/dbus/machine-id
echo "==> wsgi-stack: image hygiene done"
