# One ECR repository per image (the services and the CLI), immutable tags, scanned on push,
# and a lifecycle policy that keeps three (var.images_kept) of each:
#
#   The deploy workflow tags every image it builds with the commit SHA (immutable: a tag
#   always names the same bytes), and once the image runs in this environment (migrate
#   succeeded, or the service reached a steady state on it) it adds a second tag,
#   deployed-<environment>-<run id>-<attempt>, with ecr:PutImage on the same manifest (a new
#   tag per deployment: immutable tags cannot be moved). The rollback workflow does the same.
#   ECR cannot see what ECS runs, so that tag is how the policy knows:
#
#   1. images tagged deployed-<environment>-*: keep the var.images_kept most recently pushed.
#      The one running is among them (deployments go forward in push order, and a rollback
#      only picks one of these), and so are the ones rollback.yml offers.
#   2. every other image (built but never deployed: a failed migration, a superseded run):
#      keep the var.images_kept most recently pushed. A rule never expires an image that a
#      rule of higher priority selects by its tags, so this one never touches rule 1's.

resource "aws_ecr_repository" "image" {
  for_each = local.images

  name                 = "${var.name}-${each.key}"
  image_tag_mutability = "IMMUTABLE"
  image_scanning_configuration {
    scan_on_push = true
  }
}

locals {
  # The tag prefix of the images that ran in this environment (see above; the workflows
  # write it, tests/unit/test_deploy.py checks both sides agree).
  deployed_tag_prefix = "deployed-${var.environment}-"
}

resource "aws_ecr_lifecycle_policy" "keep" {
  for_each = aws_ecr_repository.image

  repository = each.value.name
  policy = jsonencode({
    rules = [
      {
        rulePriority = 1
        description  = "Images deployed to ${var.environment}: keep the ${var.images_kept} most recent"
        selection = {
          tagStatus     = "tagged"
          tagPrefixList = [local.deployed_tag_prefix]
          countType     = "imageCountMoreThan"
          countNumber   = var.images_kept
        }
        action = { type = "expire" }
      },
      {
        rulePriority = 2
        description  = "Images never deployed: keep the ${var.images_kept} most recent"
        selection = {
          tagStatus   = "any"
          countType   = "imageCountMoreThan"
          countNumber = var.images_kept
        }
        action = { type = "expire" }
      },
    ]
  })
}
