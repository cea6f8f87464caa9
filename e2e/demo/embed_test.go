package demo

import (
	"io/fs"
	"testing"
)

// The bundled app must keep its package files: a plain folder pattern in go:embed drops files
// that start with _ (the package's __init__.py), which an app with models cannot do without.
func TestBundledAppKeepsPackageFiles(t *testing.T) {
	for _, p := range []string{"shop/manage.py", "shop/shop/__init__.py", "shop/shop/settings.py", "shop/shop/wsgi.py"} {
		if _, err := fs.Stat(shopApp, p); err != nil {
			t.Errorf("the embedded app lacks %s: %v", p, err)
		}
	}
}
