package demo

// demoTemplate is the template `make demo` builds: every component of the plugin, with the AWS
// APIs on the local emulator and the build instance's SSH pointed at the local machine. Against
// real AWS it is example.pkr.hcl with the endpoint and ssh_host lines removed.
const demoTemplate = `
variable "endpoint"    { type = string }
variable "source_ami"  { type = string }
variable "ssh_host"    { type = string }
variable "ssh_cidr"    { type = string }
variable "app_url"     { type = string }
variable "app_sha256"  { type = string }

packer {
  required_plugins {
    wsgi = { source = "github.com/wsgi-ami/wsgi", version = ">= 0.1.0" }
  }
}

data "wsgi-cloudinit" "shop" {
  wsgi_app               = "shop.wsgi:application"
  framework              = "django"
  django_settings_module = "shop.settings"
  source {
    tarball_url = var.app_url
    sha256      = var.app_sha256
  }
  env = {
    DJANGO_ALLOWED_HOSTS = "*"
    DATABASE_PATH        = "/var/lib/wsgi-app/shop.sqlite3"
  }
}

source "wsgi-ami" "shop" {
  region                      = "us-east-1"
  access_key                  = "demo"
  secret_key                  = "demo"
  custom_endpoint_ec2         = var.endpoint
  custom_endpoint_ssm         = var.endpoint
  source_ami                  = var.source_ami
  instance_type               = "t3.small"
  ssh_username                = "admin"
  ssh_host                    = var.ssh_host
  ssh_cidrs                   = [var.ssh_cidr]
  ssh_timeout                 = "2m"
  ami_name                    = "shop-{{timestamp}}"
  ami_family                  = "shop"
  ami_regions                 = ["eu-west-1"]
  ami_users                   = ["123456789012"]
  # Shared with another account: a customer key in each region, not the account's default one.
  root_volume {
    kms_key_id = "alias/shop-shared"
  }
  region_kms_key_ids          = { "eu-west-1" = "alias/shop-shared" }
  tags                        = { App = "shop" }
  aws_polling {
    delay   = "200ms"
    timeout = "5m"
  }
}

build {
  sources = ["source.wsgi-ami.shop"]

  provisioner "wsgi-stack" {
    app_name        = "shop"
    gunicorn_source = "distro"
    extra_packages  = ["python3-django"]
    first_boot      = data.wsgi-cloudinit.shop.needs
  }

  post-processor "wsgi-launch-template" {
    region                      = "us-east-1"
    access_key                  = "demo"
    secret_key                  = "demo"
    custom_endpoint_ec2         = var.endpoint
    custom_endpoint_autoscaling = var.endpoint
    launch_template_name        = "shop"
    regions                     = ["us-east-1"]
    version_description         = "demo build ${build.ID}"
    user_data                   = data.wsgi-cloudinit.shop.user_data_gzip_base64
    user_data_encoding          = "gzip+base64"
    instance_refresh {
      auto_scaling_group_name = "shop-web"
      min_healthy_percentage  = 50
    }
    aws_polling {
      delay   = "200ms"
      timeout = "5m"
    }
  }
}
`
