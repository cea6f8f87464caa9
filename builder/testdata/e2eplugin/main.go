// Command e2eplugin is a plugin binary with only the wsgi-ami builder, for
// the builder's end-to-end test when the repository's main does not
// register it yet. It is under testdata so `go build ./...` skips it.
package main

import (
	"fmt"
	"os"

	"github.com/hashicorp/packer-plugin-sdk/plugin"

	"github.com/wsgi-ami/packer-plugin-wsgi/builder"
	"github.com/wsgi-ami/packer-plugin-wsgi/version"
)

func main() {
	pps := plugin.NewSet()
	pps.RegisterBuilder("ami", new(builder.Builder))
	pps.SetVersion(version.PluginVersion)
	if err := pps.Run(); err != nil {
		fmt.Fprintln(os.Stderr, err.Error())
		os.Exit(1)
	}
}
