package main

import (
	"bytes"
	"compress/gzip"
	"fmt"

	"gopkg.in/yaml.v3"

	"github.com/wsgi-ami/packer-plugin-wsgi/cloudinit"
)

func flaskApp(sha string) cloudinit.App {
	return cloudinit.App{
		Source:    cloudinit.Source{TarballURL: tarballURL, SHA256: sha},
		WSGIApp:   "app:app",
		Framework: cloudinit.FrameworkFlask,
	}
}

// djangoApp is the Django app of e2e/firstboot_test.go: git source, migrate and collectstatic
// built in, one environment variable.
func djangoApp() cloudinit.App {
	return cloudinit.App{
		Source:               cloudinit.Source{GitURL: "git://127.0.0.1:9418/shop.git", GitRef: "v1.0.0"},
		WSGIApp:              "mysite.wsgi:application",
		Framework:            cloudinit.FrameworkDjango,
		DjangoSettingsModule: "mysite.settings",
		Env:                  map[string]string{"DATABASE_PATH": "/var/lib/wsgi-app/db.sqlite3"},
	}
}

// stockUnit and stockSite are what a hand-written setup on a stock image typically has: one
// Gunicorn on a UNIX socket behind the distribution's NGINX.
const stockUnit = `[Unit]
Description=Gunicorn for the app
After=network.target
[Service]
User=www-data
Group=www-data
WorkingDirectory=/srv/app
RuntimeDirectory=app
ExecStart=/usr/bin/python3 -m gunicorn --workers 3 --bind unix:/run/app/gunicorn.sock app:app
Restart=on-failure
[Install]
WantedBy=multi-user.target
`

const stockSite = `server {
    listen 80 default_server;
    location / {
        proxy_pass http://unix:/run/app/gunicorn.sock;
        proxy_set_header Host $host;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto $scheme;
    }
}
`

type stockConfig struct {
	PackageUpdate bool             `yaml:"package_update"`
	Packages      []string         `yaml:"packages"`
	WriteFiles    []stockWriteFile `yaml:"write_files"`
	Runcmd        [][]string       `yaml:"runcmd"`
}

type stockWriteFile struct {
	Path    string `yaml:"path"`
	Content string `yaml:"content"`
}

// stockUserData installs NGINX and Gunicorn from Debian's mirror at boot (cloud-init's
// package module runs apt-get update and install), writes the site and the unit, then fetches,
// verifies and starts the same release the golden image's payload deploys.
func stockUserData(sha string) ([]byte, error) {
	script := fmt.Sprintf(`set -eu
curl -fsS --retry 5 -o /var/tmp/app.tar.gz %s
echo '%s  /var/tmp/app.tar.gz' | sha256sum -c -
mkdir -p /srv/app
tar -xzf /var/tmp/app.tar.gz -C /srv/app --strip-components=1
rm -f /etc/nginx/sites-enabled/default
ln -sf /etc/nginx/sites-available/app /etc/nginx/sites-enabled/app
systemctl daemon-reload
systemctl enable --now app.service
systemctl reload nginx
`, tarballURL, sha)
	c := stockConfig{
		PackageUpdate: true,
		Packages:      []string{"nginx", "python3-gunicorn"},
		WriteFiles: []stockWriteFile{
			{Path: "/etc/systemd/system/app.service", Content: stockUnit},
			{Path: "/etc/nginx/sites-available/app", Content: stockSite},
		},
		Runcmd: [][]string{{"sh", "-c", script}},
	}
	b, err := yaml.Marshal(c)
	if err != nil {
		return nil, err
	}
	return append([]byte("#cloud-config\n"), b...), nil
}

func gzipLen(b []byte) int {
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	_, _ = zw.Write(b)
	_ = zw.Close()
	return buf.Len()
}
