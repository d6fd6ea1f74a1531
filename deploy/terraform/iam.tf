# Task execution role (shared): pull images, write logs, read the database URL secret.
# Task roles (one per service): exactly the grants listed in services.tf.

data "aws_iam_policy_document" "ecs_tasks_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

resource "aws_iam_role" "execution" {
  name               = "${var.name}-task-execution"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
}

resource "aws_iam_role_policy_attachment" "execution" {
  role       = aws_iam_role.execution.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"
}

resource "aws_iam_role_policy" "execution_secrets" {
  name = "database-url"
  role = aws_iam_role.execution.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect   = "Allow"
      Action   = ["secretsmanager:GetSecretValue"]
      Resource = [aws_secretsmanager_secret.database_url.arn]
    }]
  })
}

resource "aws_iam_role" "task" {
  for_each = local.services

  name               = "${var.name}-${each.key}"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
}

resource "aws_iam_role_policy" "task" {
  for_each = local.services

  name   = "${var.name}-${each.key}"
  role   = aws_iam_role.task[each.key].id
  policy = local.task_policies[each.key]
}

# The one-off CLI task: `ingest migrate` needs the database only; `ingest dlq`, `reconcile`
# and `backfill` get what services.tf's cli_task lists. (`ingest bootstrap` is for
# moto/LocalStack; here Terraform owns the topology.)
resource "aws_iam_role" "cli" {
  name               = "${var.name}-cli"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
}

resource "aws_iam_role_policy" "cli" {
  name   = "${var.name}-cli"
  role   = aws_iam_role.cli.id
  policy = local.cli_task_policy
}
