package main

import (
	"context"
	"fmt"
	"io"

	"github.com/wsgi-ami/packer-plugin-wsgi/bench/internal/golden"
	"github.com/wsgi-ami/packer-plugin-wsgi/e2e/harness"
)

// buildGolden bakes the golden image with wsgi-stack on a fresh machine of base, adds the
// fixture server, and snapshots it to out.
func buildGolden(ctx context.Context, repo, base, work, out string, log io.Writer) error {
	return golden.Bake(ctx, golden.Options{Repo: repo, Base: base, Work: work, Out: out, Name: "fbb-bake", Log: log,
		Prepare: func(m *harness.Machine) error { return installFixtures(m.Root()) }})
}

// stockHygiene is what wsgi-stack's last step does to the golden image (internal/image/files/
// hygiene.sh.tmpl), so both images boot as equally fresh instances: new SSH host keys, a new
// machine-id, no cloud-init logs or apt lists.
const stockHygiene = `apt-get clean
rm -rf /var/lib/apt/lists/*
rm -f /etc/ssh/ssh_host_*
cloud-init clean --logs
: > /etc/machine-id
rm -f /var/lib/dbus/machine-id`

// buildStock boots the base image once with no user data, adds the same fixture server and
// snapshots it like the golden image, without the bake: the image people start from.
func buildStock(ctx context.Context, base, work, out string, log io.Writer) error {
	m, err := harness.Boot(ctx, harness.BootOptions{Image: base, Name: "fbb-stock", WorkDir: work, Log: log})
	if err != nil {
		return err
	}
	defer m.Close()
	if err := installFixtures(m.Root()); err != nil {
		return err
	}
	if _, stderr, err := m.Exec(ctx, "sh", "-eu", "-c", stockHygiene); err != nil {
		return fmt.Errorf("stock image hygiene: %w: %s", err, stderr)
	}
	return m.Snapshot(ctx, out)
}
