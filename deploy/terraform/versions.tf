terraform {
  # 1.11: write-only arguments (rds.tf keeps the database password out of the state).
  required_version = ">= 1.11"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.80"
    }
  }

  # Configure a remote backend (S3 + DynamoDB lock, or Terraform Cloud) per environment:
  #   terraform init -backend-config=env/prod.backend.hcl
  # The state holds no password (rds.tf: ephemeral + write-only); keep it encrypted anyway.
  # .terraform.lock.hcl pins the provider's version and checksums: commit it, and update it
  # with `terraform init -upgrade` (see deploy/README.md, "Terraform a reviewer can trust").
}

provider "aws" {
  region = var.region

  default_tags {
    tags = merge({ project = var.name, managed-by = "terraform" }, var.tags)
  }
}
