// Package version holds the plugin's version, set at release time by the linker.
package version

import "github.com/hashicorp/packer-plugin-sdk/version"

var (
	// Version is the main version number of this build.
	Version = "0.1.0"
	// VersionPrerelease marks a pre-release ("dev" between releases, "" for a release).
	VersionPrerelease = "dev"
	// VersionMetadata is optional build metadata.
	VersionMetadata = ""
	// PluginVersion is what `describe` reports.
	PluginVersion = version.NewPluginVersion(Version, VersionPrerelease, VersionMetadata)
)
