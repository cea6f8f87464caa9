# Integration metadata for the Packer integrations registry. The pages it points to are
# generated: .web-docs/scripts/generate.sh (make docs) compiles docs/ into .web-docs/.
integration {
  name        = "WSGI"
  description = "Golden AMIs for Python WSGI apps: NGINX and socket-activated Gunicorn units, a validated cloud-init first boot, and a launch-template rollout."
  identifier  = "packer/wsgi-ami/wsgi"
  docs {
    process_docs    = true
    readme_location = "./README.md"
    external_url    = "https://github.com/wsgi-ami/packer-plugin-wsgi"
  }
  component {
    type = "builder"
    name = "wsgi-ami"
    slug = "ami"
  }
  component {
    type = "provisioner"
    name = "wsgi-stack"
    slug = "stack"
  }
  component {
    type = "data-source"
    name = "wsgi-cloudinit"
    slug = "cloudinit"
  }
  component {
    type = "data-source"
    name = "wsgi-golden-image"
    slug = "golden-image"
  }
  component {
    type = "post-processor"
    name = "wsgi-launch-template"
    slug = "launch-template"
  }
}
