# One CloudWatch dashboard, "<name>": the queues of topology.json (depth, age of the oldest
# message, dead letters) from AWS/SQS, the consumers' own metrics (throughput, failures,
# handling and render time) from var.metrics_namespace (the collectors' EMF, see
# deploy/otel/ecs-collector.yaml), the API's requests, 5xx and response time from its ALB
# (AWS/ApplicationELB), the running tasks of every service, and the state of every alarm.

locals {
  # ids of metric math must start with a lower-case letter
  dashboard_ids = { for name in keys(local.services) : name => replace(name, "/[^a-z0-9_]/", "_") }

  dashboard_metric_widgets = [
    {
      title = "Queue depth (visible messages)"
      stat  = "Maximum"
      metrics = [for role, q in local.queues :
        ["AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", q.name, { label = q.name }]
      ]
    },
    {
      title = "Age of the oldest message (s)"
      stat  = "Maximum"
      metrics = [for role, q in local.queues :
        ["AWS/SQS", "ApproximateAgeOfOldestMessage", "QueueName", q.name, { label = q.name }]
      ]
    },
    {
      title = "Dead-letter queues (messages)"
      stat  = "Maximum"
      metrics = [for role, q in local.queues :
        ["AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", q.dead_letter_name, { label = q.dead_letter_name }]
      ]
    },
    {
      title = "Throughput: messages handled per minute"
      stat  = "Sum"
      metrics = [for name in keys(local.consumers) :
        [var.metrics_namespace, "ingest.messages", "service.name", name, { label = name }]
      ]
    },
    {
      title = "Failures: failed, invalid (to the DLQ), retry (backoff), outage (handed back)"
      stat  = "Sum"
      metrics = concat([for name in keys(local.consumers) : [
        for outcome in concat(local.error_outcomes, ["retry", "outage"]) :
        [var.metrics_namespace, "ingest.messages", "service.name", name, "outcome", outcome, { label = "${name} ${outcome}" }]
      ]]...)
    },
    {
      title = "Error rate: failed + invalid / all (the error-rate alarms)"
      stat  = "Sum"
      # concat(...), not flatten(): each metric is a list itself
      metrics = concat([for name in keys(local.consumers) : concat(
        [[{
          id         = "rate_${local.dashboard_ids[name]}"
          label      = name
          expression = "IF(total_${local.dashboard_ids[name]} > 0, (${join(" + ", [for o in local.error_outcomes : "FILL(${o}_${local.dashboard_ids[name]}, 0)"])}) / total_${local.dashboard_ids[name]}, 0)"
        }]],
        [[var.metrics_namespace, "ingest.messages", "service.name", name, { id = "total_${local.dashboard_ids[name]}", visible = false }]],
        [for o in local.error_outcomes :
          [var.metrics_namespace, "ingest.messages", "service.name", name, "outcome", o, { id = "${o}_${local.dashboard_ids[name]}", visible = false }]
        ],
      )]...)
    },
    {
      title = "Time to handle a message (s, average)"
      stat  = "Average"
      metrics = [for name in keys(local.consumers) :
        [var.metrics_namespace, "ingest.message.duration", "service.name", name, { label = name }]
      ]
    },
    {
      title = "Render time of one SVG, all its renditions (s)"
      stat  = "Average"
      metrics = [
        [var.metrics_namespace, "ingest.render.duration", "service.name", "processor", { label = "average" }],
        [var.metrics_namespace, "ingest.render.duration", "service.name", "processor", { label = "maximum", stat = "Maximum" }],
      ]
    },
    {
      title = "Render lane: workers holding a render (average, all processors), workers per processor"
      stat  = "Sum"
      metrics = [
        [{ id = "held", label = "holding a render", expression = "busy / PERIOD(busy)" }],
        [var.metrics_namespace, "ingest.render.busy", "service.name", "processor", "lane", "render", { id = "busy", visible = false }],
        [var.metrics_namespace, "ingest.render.workers", "service.name", "processor", "lane", "render", { label = "workers (per task)", stat = "Maximum" }],
      ]
    },
    {
      title = "Domain events: published per minute (by the batcher) and the outbox's lag (s)"
      stat  = "Sum"
      metrics = [
        [var.metrics_namespace, "ingest.events.published", "service.name", "batcher", { label = "published" }],
        [var.metrics_namespace, "ingest.outbox.oldest_unpublished_age", "service.name", "batcher", { label = "oldest unpublished (s)", stat = "Maximum", yAxis = "right" }],
      ]
    },
    {
      title = "API: requests per minute, and answered 5xx (by the tasks, by the ALB)"
      stat  = "Sum"
      metrics = [
        ["AWS/ApplicationELB", "RequestCount", "LoadBalancer", aws_lb.api.arn_suffix, { label = "requests" }],
        ["AWS/ApplicationELB", "HTTPCode_Target_5XX_Count", "LoadBalancer", aws_lb.api.arn_suffix, { label = "5xx by the tasks", yAxis = "right" }],
        ["AWS/ApplicationELB", "HTTPCode_ELB_5XX_Count", "LoadBalancer", aws_lb.api.arn_suffix, { label = "5xx by the ALB", yAxis = "right" }],
      ]
    },
    {
      title = "API: response time (s; an event stream counts until its first byte)"
      stat  = "p50"
      metrics = [
        ["AWS/ApplicationELB", "TargetResponseTime", "LoadBalancer", aws_lb.api.arn_suffix, { label = "p50" }],
        ["AWS/ApplicationELB", "TargetResponseTime", "LoadBalancer", aws_lb.api.arn_suffix, { label = "p99", stat = "p99" }],
        ["AWS/ApplicationELB", "HealthyHostCount", "TargetGroup", aws_lb_target_group.api.arn_suffix, "LoadBalancer", aws_lb.api.arn_suffix, { label = "healthy tasks", stat = "Minimum", yAxis = "right" }],
      ]
    },
    {
      title = "Running tasks"
      stat  = "Average"
      metrics = [for name in keys(local.services) :
        ["ECS/ContainerInsights", "RunningTaskCount", "ClusterName", aws_ecs_cluster.this.name, "ServiceName", name, { label = name }]
      ]
    },
  ]

  dashboard_widgets = concat(
    [for i, w in local.dashboard_metric_widgets : {
      type   = "metric"
      x      = (i % 2) * 12
      y      = floor(i / 2) * 6
      width  = 12
      height = 6
      properties = {
        title   = w.title
        region  = local.region
        view    = "timeSeries"
        stacked = false
        period  = 60
        stat    = w.stat
        metrics = w.metrics
      }
    }],
    [{
      type   = "alarm"
      x      = 0
      y      = ceil(length(local.dashboard_metric_widgets) / 2) * 6
      width  = 24
      height = 6
      properties = {
        title = "Alarms (to the alarms topic)"
        alarms = concat(
          [for a in aws_cloudwatch_metric_alarm.dead_letters : a.arn],
          [for a in aws_cloudwatch_metric_alarm.message_age : a.arn],
          [for a in aws_cloudwatch_metric_alarm.error_rate : a.arn],
          [aws_cloudwatch_metric_alarm.outbox_lag.arn],
          [aws_cloudwatch_metric_alarm.api_5xx_rate.arn, aws_cloudwatch_metric_alarm.api_response_time.arn],
        )
      }
    }],
  )
}

resource "aws_cloudwatch_dashboard" "ingest" {
  dashboard_name = var.name
  dashboard_body = jsonencode({ widgets = local.dashboard_widgets })
}
