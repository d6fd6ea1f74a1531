# The role .github/workflows/deploy.yml and rollback.yml assume through GitHub's OIDC provider
# (aws-actions/configure-aws-credentials with role-to-assume: no long-lived keys). Only jobs of
# var.github_repository that run in GitHub environment var.environment may assume it (the
# token's sub claim is repo:<owner/name>:environment:<environment> for such jobs), and it may
# only do what a deployment does: push and re-tag images of this stack's repositories,
# register task definitions, run the CLI task, roll this cluster's services.

locals {
  github_deploy = var.github_repository != ""
  github_oidc_provider_arn = var.github_oidc_provider_arn != "" ? var.github_oidc_provider_arn : one(
    aws_iam_openid_connect_provider.github[*].arn
  )
  service_arns   = [for name in keys(local.services) : "arn:${local.partition}:ecs:${local.region}:${local.account_id}:service/${var.name}/${name}"]
  task_role_arns = concat([for r in aws_iam_role.task : r.arn], [aws_iam_role.cli.arn, aws_iam_role.execution.arn])
}

# One per account: pass var.github_oidc_provider_arn when the account has it already.
resource "aws_iam_openid_connect_provider" "github" {
  count = local.github_deploy && var.github_oidc_provider_arn == "" ? 1 : 0

  url            = "https://token.actions.githubusercontent.com"
  client_id_list = ["sts.amazonaws.com"]
}

data "aws_iam_policy_document" "github_assume" {
  count = local.github_deploy ? 1 : 0

  statement {
    actions = ["sts:AssumeRoleWithWebIdentity"]
    principals {
      type        = "Federated"
      identifiers = [local.github_oidc_provider_arn]
    }
    condition {
      test     = "StringEquals"
      variable = "token.actions.githubusercontent.com:aud"
      values   = ["sts.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "token.actions.githubusercontent.com:sub"
      values   = ["repo:${var.github_repository}:environment:${var.environment}"]
    }
  }
}

resource "aws_iam_role" "github_deploy" {
  count = local.github_deploy ? 1 : 0

  name                 = "${var.name}-github-deploy"
  assume_role_policy   = data.aws_iam_policy_document.github_assume[0].json
  max_session_duration = 3600
}

resource "aws_iam_role_policy" "github_deploy" {
  count = local.github_deploy ? 1 : 0

  name = "${var.name}-github-deploy"
  role = aws_iam_role.github_deploy[0].id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid      = "EcrLogin"
        Effect   = "Allow"
        Action   = ["ecr:GetAuthorizationToken"] # takes no resource
        Resource = ["*"]
      },
      {
        Sid    = "PushAndTagImages"
        Effect = "Allow"
        Action = [
          "ecr:BatchCheckLayerAvailability",
          "ecr:InitiateLayerUpload",
          "ecr:UploadLayerPart",
          "ecr:CompleteLayerUpload",
          "ecr:PutImage",
          "ecr:BatchGetImage",
          "ecr:DescribeImages",
        ]
        Resource = [for r in aws_ecr_repository.image : r.arn]
      },
      {
        Sid      = "TaskDefinitions"
        Effect   = "Allow"
        Action   = ["ecs:RegisterTaskDefinition", "ecs:DescribeTaskDefinition"] # no resource-level grants
        Resource = ["*"]
      },
      {
        Sid      = "RunTheCliTask"
        Effect   = "Allow"
        Action   = ["ecs:RunTask"]
        Resource = ["arn:${local.partition}:ecs:${local.region}:${local.account_id}:task-definition/${aws_ecs_task_definition.cli.family}:*"]
        Condition = {
          ArnEquals = { "ecs:cluster" = aws_ecs_cluster.this.arn }
        }
      },
      {
        Sid      = "WatchTasks"
        Effect   = "Allow"
        Action   = ["ecs:DescribeTasks"]
        Resource = ["arn:${local.partition}:ecs:${local.region}:${local.account_id}:task/${var.name}/*"]
      },
      {
        Sid      = "RollServices"
        Effect   = "Allow"
        Action   = ["ecs:UpdateService", "ecs:DescribeServices"]
        Resource = local.service_arns
      },
      {
        Sid      = "PassTaskRoles"
        Effect   = "Allow"
        Action   = ["iam:PassRole"]
        Resource = local.task_role_arns
        Condition = {
          StringEquals = { "iam:PassedToService" = "ecs-tasks.amazonaws.com" }
        }
      },
      {
        Sid      = "ReadMigrateLog"
        Effect   = "Allow"
        Action   = ["logs:GetLogEvents"]
        Resource = ["${aws_cloudwatch_log_group.service["cli"].arn}:*"]
      },
    ]
  })
}
