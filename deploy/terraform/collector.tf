# An OpenTelemetry collector (ADOT) beside every service, in the same task: the service sends
# OTLP/HTTP to 127.0.0.1:4318 (services.tf sets OTEL_EXPORTER_OTLP_ENDPOINT), the collector
# sends traces to X-Ray and metrics to CloudWatch (EMF), or to var.otlp_endpoint.
# Its configuration is deploy/otel/ecs-collector.yaml, handed over in AOT_CONFIG_CONTENT.
# One container definition for all services (ecs.tf appends it to each task definition).

locals {
  collector_otlp_endpoint = "http://127.0.0.1:4318"
  metrics_log_group       = "/ecs/${var.name}/metrics"
  metrics_log_group_arn   = "arn:${local.partition}:logs:${local.region}:${local.account_id}:log-group:${local.metrics_log_group}"

  collector_config_file = file("${path.module}/../otel/ecs-collector.yaml")
  collector_config      = yamldecode(local.collector_config_file)
  collector_pipelines   = local.collector_config.service.pipelines

  # var.otlp_endpoint set: traces go there instead of X-Ray; metrics go there as well as to
  # CloudWatch, because the alarms and the dashboard read CloudWatch.
  collector_config_content = var.otlp_endpoint == "" ? local.collector_config_file : yamlencode(merge(local.collector_config, {
    exporters = merge(local.collector_config.exporters, {
      otlphttp = { endpoint = var.otlp_endpoint }
    })
    service = merge(local.collector_config.service, {
      pipelines = merge(local.collector_pipelines, {
        traces  = merge(local.collector_pipelines.traces, { exporters = ["otlphttp"] })
        metrics = merge(local.collector_pipelines.metrics, { exporters = concat(local.collector_pipelines.metrics.exporters, ["otlphttp"]) })
      })
    })
  }))

  collector_environment = {
    AOT_CONFIG_CONTENT = local.collector_config_content
    AWS_REGION         = local.region
    METRICS_NAMESPACE  = var.metrics_namespace
    METRICS_LOG_GROUP  = local.metrics_log_group
  }

  # service → the collector container of its task definition (only the log stream differs).
  collector_containers = {
    for name in keys(local.services) : name => {
      name      = "otel-collector"
      image     = var.collector_image
      essential = false # a collector failure loses telemetry, never messages
      # ECS restarts it in place (the task, and the messages it holds, stay).
      restartPolicy     = { enabled = true, restartAttemptPeriod = 60 }
      memoryReservation = 128
      environment = [for k in sort(keys(local.collector_environment)) : {
        name  = k
        value = local.collector_environment[k]
      }]
      healthCheck = {
        command     = ["CMD", "/healthcheck"] # the image's probe of the health_check extension
        interval    = 15
        timeout     = 5
        retries     = 3
        startPeriod = 10
      }
      logConfiguration = {
        logDriver = "awslogs"
        options = {
          awslogs-group         = aws_cloudwatch_log_group.service[name].name
          awslogs-region        = local.region
          awslogs-stream-prefix = "otel-collector"
        }
      }
    }
  }
}

# The EMF records the collectors write; CloudWatch turns them into metrics of
# var.metrics_namespace. A short retention: the metrics stay in CloudWatch Metrics.
resource "aws_cloudwatch_log_group" "metrics" {
  name              = local.metrics_log_group
  retention_in_days = 7
}

# What the collector needs, on every task role: X-Ray segments (no resource-level permissions
# exist for them) and log events in the metrics log group only.
resource "aws_iam_role_policy" "telemetry" {
  for_each = local.services

  name = "${var.name}-${each.key}-telemetry"
  role = aws_iam_role.task[each.key].id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid      = "Traces"
        Effect   = "Allow"
        Action   = ["xray:PutTraceSegments", "xray:PutTelemetryRecords"]
        Resource = ["*"]
      },
      {
        Sid      = "EmbeddedMetrics"
        Effect   = "Allow"
        Action   = ["logs:PutLogEvents", "logs:CreateLogStream", "logs:DescribeLogStreams"]
        Resource = [local.metrics_log_group_arn, "${local.metrics_log_group_arn}:*"]
      },
    ]
  })
}
