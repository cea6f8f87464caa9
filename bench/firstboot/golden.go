package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/wsgi-ami/packer-plugin-wsgi/bench/internal/golden"
	"github.com/wsgi-ami/packer-plugin-wsgi/e2e/harness"
	"github.com/wsgi-ami/packer-plugin-wsgi/e2e/pyfixture"
)

// bakeIndexPort is where the wheelhouse bake's index listens on the build machine's loopback.
const bakeIndexPort = 8765

// buildGolden bakes the golden image with wsgi-stack on a fresh machine of base, adds the
// fixture server (with shop, the Django shop's archive and boot-time index too), and snapshots
// it to out.
func buildGolden(ctx context.Context, repo, base, work, out string, shop *shopFixture, log io.Writer) error {
	bw := filepath.Join(work, "bake")
	if err := os.MkdirAll(bw, 0o755); err != nil {
		return err
	}
	return golden.Bake(ctx, golden.Options{Repo: repo, Base: base, Work: bw, Out: out, Name: "fbb-bake", Log: log,
		Prepare: func(m *harness.Machine) error { return installFixtures(m.Root(), shop) }})
}

// buildWheelhouse bakes the golden image with the shop's requirements_file, as TestWheelhouse
// does: the index of pyfixture.ShopDistributions on the build machine's loopback (Django,
// asgiref and sqlparse repacked from the base image, a pure-Python wheel, and a C extension as
// an sdist the bake compiles with build tools it removes again). The baked wheels, all built
// offline, become the boot-time index of the variants without a wheelhouse; the requirements
// and the wheels are kept in keep for later runs with the same images.
func buildWheelhouse(ctx context.Context, repo, base, work, out, keep string, log io.Writer) (*shopFixture, error) {
	bw := filepath.Join(work, "bake-wh")
	if err := os.MkdirAll(bw, 0o755); err != nil {
		return nil, err
	}
	reqFile := filepath.Join(bw, "requirements.txt")
	var shop *shopFixture
	err := golden.Bake(ctx, golden.Options{Repo: repo, Base: base, Work: bw, Out: out, Name: "fbb-bakewh", Log: log,
		Stack: fmt.Sprintf(`    gunicorn_source   = "distro"
    pip_index_url     = "http://127.0.0.1:%d/simple/"
    requirements_file = %q`, bakeIndexPort, reqFile),
		BeforeBuild: func(m *harness.Machine) error {
			files, versions, err := pyfixture.ShopDistributions(m.Root())
			if err != nil {
				return err
			}
			if err := pyfixture.WriteIndex(filepath.Join(m.Root(), pyfixture.IndexDir), files); err != nil {
				return err
			}
			if err := os.WriteFile(reqFile, []byte(pyfixture.ShopRequirements(versions)), 0o644); err != nil {
				return err
			}
			return pyfixture.ServeIndex(ctx, m, bakeIndexPort)
		},
		Prepare: func(m *harness.Machine) error {
			if err := pyfixture.StopIndex(ctx, m); err != nil {
				return err
			}
			reqs, err := os.ReadFile(reqFile)
			if err != nil {
				return err
			}
			wheels, err := readWheels(filepath.Join(m.Root(), wheelhouseDir))
			if err != nil {
				return err
			}
			if shop, err = newShop(string(reqs), wheels); err != nil {
				return err
			}
			if err := shop.save(keep); err != nil {
				return err
			}
			return installFixtures(m.Root(), shop)
		}})
	return shop, err
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
	if err := installFixtures(m.Root(), nil); err != nil {
		return err
	}
	if _, stderr, err := m.Exec(ctx, "sh", "-eu", "-c", stockHygiene); err != nil {
		return fmt.Errorf("stock image hygiene: %w: %s", err, stderr)
	}
	return m.Snapshot(ctx, out)
}
