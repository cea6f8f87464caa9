#!/usr/bin/env bash
# Regenerates the docs that come from the code, all checked in so CI can fail when they are stale:
#   docs-partials/  packer-sdc struct-markdown over the config structs (field doc comments)
#   .web-docs/      docs/*.mdx with the partials included (packer-sdc renderdocs), reshaped into
#                   the layout the Packer integrations registry reads (README.md per component)
# Usage, from anywhere: .web-docs/scripts/generate.sh   (PACKER_SDC=path overrides `go tool packer-sdc`)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
sdc=${PACKER_SDC:-go tool packer-sdc}

# The files whose structs carry the HCL keys of the components.
config_files=(
	builder/config.go builder/ami_config.go builder/run_config.go builder/source_config.go
	provisioner/stack/config.go internal/image/config.go
	cloudinit/app.go cloudinit/datasource/datasource.go
	datasource/goldenimage/config.go datasource/goldenimage/datasource.go
	launchtemplate/config.go
	internal/awscfg/access.go
)

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# struct-markdown finds the project root by walking up to a folder named packer-plugin-*; a
# checkout may be named anything, so it is handed the files through such a link.
ln -s "$root" "$tmp/packer-plugin-wsgi"
rm -rf docs-partials
for f in "${config_files[@]}"; do
	$sdc struct-markdown "$tmp/packer-plugin-wsgi/$f"
done

$sdc renderdocs -src docs -partials docs-partials/ -dst "$tmp/rendered/"
# renderdocs leaves an @include it cannot resolve in place; that is a broken page.
if grep -rn "@include '" "$tmp/rendered"; then
	echo "generate.sh: unresolved @include above (missing partial?)" >&2
	exit 1
fi

# Integration layout: .web-docs/README.md from docs/README.md, and
# .web-docs/components/<type>/<slug>/README.md from docs/<type>s/<slug>.mdx without its front
# matter and its H1 (the registry adds the title from metadata.hcl).
rm -rf .web-docs/components .web-docs/README.md
cp "$tmp/rendered/README.md" .web-docs/README.md
for page in "$tmp"/rendered/*/*.mdx; do
	folder=$(basename "$(dirname "$page")")
	case "$folder" in
	builders) type=builder ;;
	provisioners) type=provisioner ;;
	post-processors) type=post-processor ;;
	datasources) type=data-source ;;
	*) echo "generate.sh: $page: unknown component folder $folder" >&2; exit 1 ;;
	esac
	slug=$(basename "$page" .mdx)
	out=.web-docs/components/$type/$slug/README.md
	mkdir -p "$(dirname "$out")"
	awk '
		NR == 1 && /^---$/ { front = 1; next }
		front && /^---$/   { front = 0; next }
		front              { next }
		!h1 && /^# /       { h1 = 1; skip_blank = 1; next }
		skip_blank && /^$/ { next }
		                   { skip_blank = 0; print }
	' "$page" |
		# Links between component pages point at their integration pages; other docs/ links
		# point at the repository, since only the component pages are published.
		sed -E \
			-e 's#\]\(\.\./builders/([a-z-]+)\.mdx(\#[^)]*)?\)#](/packer/integrations/wsgi-ami/wsgi/latest/components/builder/\1\2)#g' \
			-e 's#\]\(\.\./provisioners/([a-z-]+)\.mdx(\#[^)]*)?\)#](/packer/integrations/wsgi-ami/wsgi/latest/components/provisioner/\1\2)#g' \
			-e 's#\]\(\.\./datasources/([a-z-]+)\.mdx(\#[^)]*)?\)#](/packer/integrations/wsgi-ami/wsgi/latest/components/data-source/\1\2)#g' \
			-e 's#\]\(\.\./post-processors/([a-z-]+)\.mdx(\#[^)]*)?\)#](/packer/integrations/wsgi-ami/wsgi/latest/components/post-processor/\1\2)#g' \
			-e 's#\]\(\.\./([^):]+)\)#](https://github.com/wsgi-ami/packer-plugin-wsgi/blob/main/docs/\1)#g' \
			>"$out"
done
