# Ship a release of the shop app without a rebake: the newest golden image that example.pkr.hcl
# baked, a new first-boot payload, a new launch-template version and an instance refresh.
# No build instance, no snapshot: seconds instead of minutes.
#
#   packer init release.pkr.hcl
#   packer build -var app_ref=v2.3.2 release.pkr.hcl
#
# Needs AWS credentials with the policy in docs/post-processors/launch-template.mdx and
# ec2:DescribeImages. docs/workflows.md explains when to bake and when to release.

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
}

variable "auto_scaling_group" {
  type    = string
  default = "shop-web"
}

locals {
  app_name = "shop"
}

# The newest available, non-deprecated AMI that example.pkr.hcl baked (ami_family = "shop").
data "wsgi-golden-image" "shop" {
  region = var.region
  family = local.app_name
}

# The same payload as example.pkr.hcl's, at the new app_ref.
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
  secrets = {
    DJANGO_SECRET_KEY = "ssm:/shop/prod/secret-key"
    DATABASE_URL      = "secretsmanager:prod/shop/db"
  }
}

# Packer needs a source; the null builder without a communicator does nothing at all.
source "null" "release" {
  communicator = "none"
}

build {
  sources = ["source.null.release"]

  # The null builder's artifact carries no AMI, so the version launches ami_ids. The payload is
  # checked against the image's wsgi:stack-provides tag before anything changes on AWS.
  post-processor "wsgi-launch-template" {
    region               = var.region
    launch_template_name = local.app_name
    ami_ids              = data.wsgi-golden-image.shop.ami_ids
    user_data            = data.wsgi-cloudinit.shop.user_data_gzip_base64
    user_data_encoding   = "gzip+base64"
    version_description  = "shop ${var.app_ref} on ${data.wsgi-golden-image.shop.name}"

    instance_refresh {
      auto_scaling_group_name = var.auto_scaling_group
      min_healthy_percentage  = 90
      instance_warmup         = "120s"
      auto_rollback           = true
      wait                    = true
    }
  }
}
