# A golden AMI for a Django app, its first-boot payload, and a rollout to an Auto Scaling group.
#
#   packer init example.pkr.hcl
#   packer build -var app_ref=v2.3.1 example.pkr.hcl
#
# Needs AWS credentials with the policy in docs/builders/ami.mdx and
# docs/post-processors/launch-template.mdx. The app answers 200 on /healthz.

packer {
  required_plugins {
    wsgi = {
      source  = "github.com/wsgi-ami/wsgi"
      version = ">= 0.1.0"
    }
  }
}

variable "region" {
  type    = string
  default = "eu-west-1"
}

variable "app_ref" {
  type        = string
  description = "Git commit, tag or branch of the app to deploy at first boot."
  default     = "main"
}

variable "auto_scaling_group" {
  type    = string
  default = "shop-web"
}

locals {
  app_name = "shop"
}

# The app, for first boot: what to fetch, which secrets to read, which hooks to run. The image's
# baked deploy does the rest: fetch, venv, migrate, collectstatic, switch, sockets on.
data "wsgi-cloudinit" "shop" {
  wsgi_app               = "mysite.wsgi:application"
  framework              = "django"
  django_settings_module = "mysite.settings"

  source {
    git_url = "https://github.com/example/shop.git"
    git_ref = var.app_ref
  }

  env = {
    DJANGO_ALLOWED_HOSTS = "shop.example.com"
  }
  # Resolved at boot with the instance role; the values never enter user data.
  secrets = {
    DJANGO_SECRET_KEY = "ssm:/shop/prod/secret-key"
    DATABASE_URL      = "secretsmanager:prod/shop/db"
  }
}

source "wsgi-ami" "shop" {
  region                  = var.region
  source_ami              = "resolve:ssm:/aws/service/debian/release/13/latest/amd64"
  instance_type           = "t3.small"
  fallback_instance_types = ["t3a.small", "m6i.large"]
  ssh_username            = "admin"

  ami_name        = "shop-{{timestamp}}"
  ami_description = "shop web, NGINX + 3 socket-activated Gunicorn units"
  ami_family      = local.app_name
  tags = {
    App = local.app_name
  }
}

build {
  sources = ["source.wsgi-ami.shop"]

  # The stack, declared once: NGINX, three socket-activated Gunicorn units, the deploy. first_boot
  # bakes in what the payload needs (git for its git source); the post-processor checks the AMI's
  # tags against the payload before it changes anything.
  provisioner "wsgi-stack" {
    app_name       = local.app_name
    sockets        = 3
    extra_packages = ["libpq5"]
    first_boot     = data.wsgi-cloudinit.shop.needs
  }

  post-processor "wsgi-launch-template" {
    region               = var.region
    launch_template_name = local.app_name
    user_data            = data.wsgi-cloudinit.shop.user_data_gzip_base64
    user_data_encoding   = "gzip+base64"
    version_description  = "shop ${var.app_ref}"
    keep_releases        = 5

    instance_refresh {
      auto_scaling_group_name = var.auto_scaling_group
      min_healthy_percentage  = 90
      instance_warmup         = "120s"
      auto_rollback           = true
      wait                    = true
    }
  }
}
