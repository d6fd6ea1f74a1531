# One Fargate service per ingest service, one task definition for one-off CLI tasks; the ECR
# repositories are in ecr.tf. Images: deploy/docker/Dockerfile with --build-arg SERVICE=<name>.
#
# Terraform registers each task definition with var.image_tag and creates the services; from
# then on .github/workflows/deploy.yml deploys: it registers a revision of the family's latest
# task definition with the commit's image and rolls the service to it. So the services ignore
# changes of task_definition here, and a change Terraform makes to a task definition (an
# environment variable, a size) goes out with the next deployment (or rollback), which starts
# from the family's latest revision.

locals {
  images = toset(concat(keys(local.services), ["cli"]))

  cli_environment = merge(local.name_environment, {
    AWS_REGION        = local.region
    INGEST_LOG_FORMAT = "json"
    INGEST_LOG_LEVEL  = var.log_level
  })

  # Port 8080: the INGEST_HEALTH_PORT of every service's container_environment (services.tf),
  # as in the image; the api's ALB health check probes it too (api.tf).
  health_port = 8080

  # Same check as the image's HEALTHCHECK: /healthz turns 503 when the poll loop is stuck.
  health_command = [
    "CMD", "python", "-c",
    "import urllib.request as u; u.urlopen('http://127.0.0.1:8080/healthz', timeout=4)",
  ]
}

resource "aws_ecs_cluster" "this" {
  name = var.name

  # Container Insights publishes RunningTaskCount, which the backlog-per-task scaling uses.
  setting {
    name  = "containerInsights"
    value = "enabled"
  }
}

resource "aws_cloudwatch_log_group" "service" {
  for_each = local.images

  name              = "/ecs/${var.name}/${each.key}"
  retention_in_days = var.log_retention_days
}

# Tasks only call out (SQS, S3, SNS, EventBridge, RDS, X-Ray, CloudWatch Logs): no ingress at
# all; the collector listens on the task's loopback only. The api's tasks are in this group
# too, and in aws_security_group.api_tasks (api.tf), which lets its ALB in.
resource "aws_security_group" "tasks" {
  name        = "${var.name}-tasks"
  description = "ingest ECS tasks (egress only)"
  vpc_id      = var.vpc_id

  egress {
    description = "AWS APIs, PostgreSQL, OTLP backends"
    from_port   = 0
    to_port     = 0
    protocol    = "-1"
    cidr_blocks = ["0.0.0.0/0"]
  }
}

resource "aws_ecs_task_definition" "service" {
  for_each = local.services

  family                   = "${var.name}-${each.key}"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.services[each.key].cpu
  memory                   = var.services[each.key].memory
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.task[each.key].arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = "X86_64"
  }

  # The service, and the OpenTelemetry collector it sends to (collector.tf). The service
  # starts after the collector and stops before it, so its last spans and metrics get out.
  container_definitions = jsonencode([{
    name      = each.key
    image     = "${aws_ecr_repository.image[each.key].repository_url}:${var.image_tag}"
    essential = true
    dependsOn = [{ containerName = local.collector_containers[each.key].name, condition = "START" }]
    # ENTRYPOINT is ingest-<service>; SIGTERM starts the drain (INGEST_DRAIN_TIMEOUT, 60 s by
    # default), and ECS waits stopTimeout (Fargate's maximum, 120 s) before SIGKILL.
    stopTimeout = 120
    environment = [for k in sort(keys(local.container_environment[each.key])) : {
      name  = k
      value = local.container_environment[each.key][k]
    }]
    secrets = [{
      name      = "DATABASE_URL"
      valueFrom = aws_secretsmanager_secret.database_url.arn
    }]
    # The api's two ports, for its ALB (api.tf): requests, and /readyz for its health check.
    portMappings = each.key == "api" ? [
      { containerPort = local.api_port, protocol = "tcp" },
      { containerPort = local.health_port, protocol = "tcp" },
    ] : []
    healthCheck = {
      command     = local.health_command
      interval    = 15
      timeout     = 5
      retries     = 3
      startPeriod = 30
    }
    linuxParameters = {
      initProcessEnabled = true # reaps the processor's render worker processes
    }
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = aws_cloudwatch_log_group.service[each.key].name
        awslogs-region        = local.region
        awslogs-stream-prefix = each.key
      }
    }
  }, local.collector_containers[each.key]])
}

resource "aws_ecs_service" "service" {
  for_each = local.services

  name                    = each.key
  cluster                 = aws_ecs_cluster.this.id
  task_definition         = aws_ecs_task_definition.service[each.key].arn
  desired_count           = var.services[each.key].min_count
  launch_type             = "FARGATE"
  propagate_tags          = "SERVICE"
  enable_ecs_managed_tags = true

  # Start the new tasks before stopping the old ones, roll back a deployment whose tasks
  # never turn healthy (the api's: also in its ALB target group, on /readyz).
  deployment_minimum_healthy_percent = 100
  deployment_maximum_percent         = 200
  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }
  # A deployment is also rolled back when the service's error-rate alarm (alarms.tf) goes into
  # ALARM while it runs or during the bake time after it: new tasks that start and pass their
  # health check but fail their messages; for the api, its 5xx-rate alarm (api.tf). (The DLQ
  # and message-age alarms are left out: they can be in ALARM before a deployment, e.g. the
  # backlog that a fix is deployed to clear.)
  alarms {
    enable   = true
    rollback = true
    alarm_names = each.key == "api" ? [aws_cloudwatch_metric_alarm.api_5xx_rate.alarm_name] : [
      aws_cloudwatch_metric_alarm.error_rate[each.key].alarm_name
    ]
  }

  network_configuration {
    subnets          = var.private_subnet_ids
    security_groups  = each.key == "api" ? [aws_security_group.tasks.id, aws_security_group.api_tasks.id] : [aws_security_group.tasks.id]
    assign_public_ip = var.assign_public_ip
  }

  # The api's tasks register in its ALB's target group (api.tf); the ALB's health check
  # (/readyz) gets a minute before a failing one counts.
  dynamic "load_balancer" {
    for_each = each.key == "api" ? [aws_lb_target_group.api.arn] : []
    content {
      target_group_arn = load_balancer.value
      container_name   = each.key
      container_port   = local.api_port
    }
  }
  health_check_grace_period_seconds = each.key == "api" ? 60 : null

  # The task count belongs to Application Auto Scaling (autoscaling.tf) after creation;
  # change min_count/max_count in var.services instead. The task definition belongs to the
  # deploy and rollback workflows after creation (see the top of this file).
  lifecycle {
    ignore_changes = [desired_count, task_definition]
  }

  depends_on = [
    aws_iam_role_policy.task,
    aws_iam_role_policy.execution_secrets,
    aws_secretsmanager_secret_version.database_url,
    aws_lb_listener.api_https, # a target group must belong to a load balancer first
  ]
}

# One-off tasks: `ingest migrate` before each deployment (the deploy workflow registers a
# revision with the commit's image and runs it; see deploy/README.md), and `ingest dlq`,
# `ingest reconcile`, `ingest backfill` by hand with --overrides (grants: iam.tf).
resource "aws_ecs_task_definition" "cli" {
  family                   = "${var.name}-cli"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = 256
  memory                   = 512
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.cli.arn

  container_definitions = jsonencode([{
    name      = "cli"
    image     = "${aws_ecr_repository.image["cli"].repository_url}:${var.image_tag}"
    essential = true
    command   = ["migrate"] # ENTRYPOINT is `ingest`
    environment = [for k in sort(keys(local.cli_environment)) : {
      name  = k
      value = local.cli_environment[k]
    }]
    secrets = [{
      name      = "DATABASE_URL"
      valueFrom = aws_secretsmanager_secret.database_url.arn
    }]
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = aws_cloudwatch_log_group.service["cli"].name
        awslogs-region        = local.region
        awslogs-stream-prefix = "cli"
      }
    }
  }])
}
