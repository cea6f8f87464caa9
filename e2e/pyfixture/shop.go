package pyfixture

import (
	"fmt"
	"path/filepath"
	"strings"
)

// Greeting is what the shop's pure-Python requirement says.
const Greeting = "hello from the wheelhouse"

// ShopDistributions are the shop's requirements as an index serves them before a bake:
// Django, asgiref and sqlparse (Debian's files from the machine whose root is root, repacked as
// wheels), a pure-Python wheel made here, and the C extension as an sdist, which a bake must
// compile. It returns them by file name, with the versions of the repacked packages.
func ShopDistributions(root string) (files map[string][]byte, versions map[string]string, err error) {
	files, versions = map[string][]byte{}, map[string]string{}
	site := filepath.Join(root, "usr/lib/python3/dist-packages")
	for _, name := range []string{"django", "asgiref", "sqlparse"} {
		infos, _ := filepath.Glob(filepath.Join(site, name+"-*.dist-info"))
		if len(infos) != 1 {
			return nil, nil, fmt.Errorf("want one %s dist-info in %s, got %q", name, site, infos)
		}
		v := strings.TrimSuffix(strings.TrimPrefix(filepath.Base(infos[0]), name+"-"), ".dist-info")
		versions[name] = v
		if files[fmt.Sprintf("%s-%s-py3-none-any.whl", name, v)], err = Repack(root, site, name, filepath.Base(infos[0])); err != nil {
			return nil, nil, fmt.Errorf("repack %s: %w", name, err)
		}
	}
	if files["greeting-1.0-py3-none-any.whl"], err = PureWheel("greeting", "1.0", map[string]string{
		"greeting/__init__.py": "def hello():\n    return \"" + Greeting + "\"\n",
	}); err != nil {
		return nil, nil, err
	}
	sdist := map[string]string{}
	for k, v := range FastcounterFiles {
		sdist["fastcounter-1.0/"+k] = v
	}
	if files["fastcounter-1.0.tar.gz"], err = TarGz(sdist); err != nil {
		return nil, nil, err
	}
	return files, versions, nil
}

// ShopRequirements is the shop's requirements.txt for the versions ShopDistributions found.
func ShopRequirements(versions map[string]string) string {
	return fmt.Sprintf("# the shop's pins\nDjango==%s\nasgiref==%s\nsqlparse==%s\nfastcounter==1.0\ngreeting==1.0\n",
		versions["django"], versions["asgiref"], versions["sqlparse"])
}

// ShopFiles are the shop's release: the Django app of DjangoFiles with ShopURLs and the
// requirements file reqs.
func ShopFiles(reqs string) map[string]string {
	shop := map[string]string{"requirements.txt": reqs}
	for k, v := range DjangoFiles {
		shop[k] = v
	}
	shop["mysite/urls.py"] = ShopURLs
	return shop
}
