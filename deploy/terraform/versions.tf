terraform {
  required_version = ">= 1.5"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.80"
    }
    random = {
      source  = "hashicorp/random"
      version = "~> 3.6"
    }
  }

  # Configure a remote backend (S3 + DynamoDB lock, or Terraform Cloud) per environment:
  #   terraform init -backend-config=env/prod.backend.hcl
  # The state holds the database password (random_password.db): keep it encrypted.
}

provider "aws" {
  region = var.region

  default_tags {
    tags = merge({ project = var.name, managed-by = "terraform" }, var.tags)
  }
}
