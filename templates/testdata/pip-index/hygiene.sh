#!/bin/sh
# Managed by packer-plugin-wsgi. Last step of the bake: leave no per-machine state in the image.
# Runs last so the build can still disconnect cleanly: sshd keeps running with the keys it loaded.
set -eu
echo "==> wsgi-stack: image hygiene"
apt-get clean
rm -rf /var/lib/apt/lists/*
rm -f /etc/ssh/ssh_host_*
rm -f /root/.bash_history /home/*/.bash_history
if command -v cloud-init >/dev/null 2>&1; then
	cloud-init clean --logs --machine-id
else
	truncate -s 0 /etc/machine-id
fi
echo "==> wsgi-stack: image hygiene done"
