// Command packer-plugin-wsgi is the Packer plugin binary. It only registers the components;
// each lives in its own package.
package main

import (
	"fmt"
	"os"

	"github.com/hashicorp/packer-plugin-sdk/plugin"

	"github.com/wsgi-ami/packer-plugin-wsgi/builder"
	"github.com/wsgi-ami/packer-plugin-wsgi/cloudinit/datasource"
	"github.com/wsgi-ami/packer-plugin-wsgi/datasource/goldenimage"
	"github.com/wsgi-ami/packer-plugin-wsgi/launchtemplate"
	"github.com/wsgi-ami/packer-plugin-wsgi/provisioner/stack"
	"github.com/wsgi-ami/packer-plugin-wsgi/version"
)

func main() {
	pps := plugin.NewSet()
	pps.RegisterBuilder("ami", new(builder.Builder))
	pps.RegisterProvisioner("stack", new(stack.Provisioner))
	pps.RegisterDatasource("cloudinit", new(datasource.Datasource))
	pps.RegisterDatasource("golden-image", new(goldenimage.Datasource))
	pps.RegisterPostProcessor("launch-template", new(launchtemplate.PostProcessor))
	pps.SetVersion(version.PluginVersion)
	if err := pps.Run(); err != nil {
		fmt.Fprintln(os.Stderr, err.Error())
		os.Exit(1)
	}
}
