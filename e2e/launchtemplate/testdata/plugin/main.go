// Command plugin is a plugin binary with the wsgi-ami builder, the
// wsgi-cloudinit data source and the wsgi-launch-template post-processor,
// for the chained packer build of the end-to-end test while the
// repository's main.go does not register all three yet. It is under
// testdata so `go build ./...` skips it.
package main

import (
	"fmt"
	"os"

	"github.com/hashicorp/packer-plugin-sdk/plugin"

	"github.com/wsgi-ami/packer-plugin-wsgi/builder"
	"github.com/wsgi-ami/packer-plugin-wsgi/cloudinit/datasource"
	"github.com/wsgi-ami/packer-plugin-wsgi/launchtemplate"
	"github.com/wsgi-ami/packer-plugin-wsgi/version"
)

func main() {
	pps := plugin.NewSet()
	pps.RegisterBuilder("ami", new(builder.Builder))
	pps.RegisterDatasource("cloudinit", new(datasource.Datasource))
	pps.RegisterPostProcessor("launch-template", new(launchtemplate.PostProcessor))
	pps.SetVersion(version.PluginVersion)
	if err := pps.Run(); err != nil {
		fmt.Fprintln(os.Stderr, err.Error())
		os.Exit(1)
	}
}
