# Alarms that need a person, all notifying the alarms topic of topology.json (events.tf; set
# var.alarm_email, or subscribe a pager or chat integration to it), also when they recover:
#
#   <role>-dead-letters   (autoscaling.tf) any message in a DLQ: `ingest dlq` inspects it
#   <role>-message-age    the oldest message of a queue has waited var.message_age_alarm_seconds
#                         for 5 minutes: the consumers are stuck or scaled out to max_count
#   <service>-error-rate  more than var.error_rate_alarm_threshold of a service's messages
#                         ended failed or invalid (sent to the DLQ), from its own metrics
#   outbox-lag            a domain event has waited var.outbox_lag_alarm_seconds to be
#                         published for 5 minutes, or no batcher reports the outbox at all
#   api-5xx-rate          (api.tf) more than var.api_5xx_rate_alarm_threshold of the API's
#                         requests answered 5xx (by the tasks or by the ALB itself)
#   api-response-time     (api.tf) the API's p99 response time over
#                         var.api_response_time_alarm_seconds
#
# autoscaling.tf's <service>-oldest-message alarms only add tasks: they notify nobody.

locals {
  alarm_actions = [aws_sns_topic.topic["alarms"].arn]

  # The outcomes of ingest.messages (runtime/consumer.py) that send the message to the DLQ.
  # Not "ok", nor "retry" (tried again after a backoff: it ends ok or failed) and "outage"
  # (handed back while a dependency is down: a long outage shows up as message age).
  error_outcomes = ["failed", "invalid"]
}

resource "aws_cloudwatch_metric_alarm" "message_age" {
  for_each = local.queues

  alarm_name          = "${var.name}-${each.key}-message-age"
  alarm_description   = "The oldest message of ${each.value.name} has waited more than ${var.message_age_alarm_seconds} s for 5 minutes: its consumers are stuck, failing or at their max_count."
  namespace           = "AWS/SQS"
  metric_name         = "ApproximateAgeOfOldestMessage"
  dimensions          = { QueueName = aws_sqs_queue.queue[each.key].name }
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 5
  datapoints_to_alarm = 5
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.message_age_alarm_seconds
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
}

# failed + invalid over every outcome, per consumer (service.name), from the EMF metrics the
# collectors write (deploy/otel/ecs-collector.yaml declares these dimension sets).
resource "aws_cloudwatch_metric_alarm" "error_rate" {
  for_each = local.consumers

  alarm_name          = "${var.name}-${each.key}-error-rate"
  alarm_description   = "More than ${var.error_rate_alarm_threshold * 100}% of ${each.key}'s messages ended failed or invalid (sent to a DLQ) in 3 of the last 5 periods of 5 minutes."
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.error_rate_alarm_threshold
  evaluation_periods  = 5
  datapoints_to_alarm = 3
  treat_missing_data  = "notBreaching" # no messages, no rate
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions

  metric_query {
    id          = "error_rate"
    label       = "${each.key}: failed + invalid / all messages"
    expression  = "IF(total > 0, (${join(" + ", [for o in local.error_outcomes : "FILL(${o}, 0)"])}) / total, 0)"
    return_data = true
  }

  metric_query {
    id = "total"
    metric {
      namespace   = var.metrics_namespace
      metric_name = "ingest.messages"
      dimensions  = { "service.name" = each.key }
      stat        = "Sum"
      period      = 300
    }
  }

  dynamic "metric_query" {
    for_each = toset(local.error_outcomes)
    content {
      id = metric_query.value
      metric {
        namespace   = var.metrics_namespace
        metric_name = "ingest.messages"
        dimensions  = { "service.name" = each.key, outcome = metric_query.value }
        stat        = "Sum"
        period      = 300
      }
    }
  }
}

# The batcher that publishes the domain events reports how long the oldest unpublished one has
# waited (ingest_common.outbox); 0 when none waits. No data means no batcher publishes.
resource "aws_cloudwatch_metric_alarm" "outbox_lag" {
  alarm_name          = "${var.name}-outbox-lag"
  alarm_description   = "A domain event has waited more than ${var.outbox_lag_alarm_seconds} s to be published for 5 minutes, or no batcher reports the outbox: SNS or EventBridge refuses (see the batcher's outbox.publish_failed logs), or no batcher runs."
  namespace           = var.metrics_namespace
  metric_name         = "ingest.outbox.oldest_unpublished_age"
  dimensions          = { "service.name" = "batcher" }
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 5
  datapoints_to_alarm = 5
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.outbox_lag_alarm_seconds
  treat_missing_data  = "breaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
}
