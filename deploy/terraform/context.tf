# Where we are; the only data sources, kept apart so the pure locals (topology.tf,
# services.tf) can be evaluated without AWS credentials.
data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}
data "aws_region" "current" {}

locals {
  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition
  region     = data.aws_region.current.name
}
