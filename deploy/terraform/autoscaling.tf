# Scale-out is more consumers on the same queue. Each service's task count follows its
# queue with two policies (Application Auto Scaling takes the larger answer on scale-out):
#
# 1. Target tracking on the backlog per task = ApproximateNumberOfMessagesVisible / running
#    tasks, held at var.services[*].backlog_per_task (≈ one task's throughput × the wait you
#    accept). Scales in too, slowly: a task that is stopped drains on SIGTERM.
# 2. Step scaling on ApproximateAgeOfOldestMessage: when the oldest message has waited longer
#    than max_message_age (work is stuck or slow, even with a short queue), add tasks.
#
# The processor is the one that matters (CPU-bound rendering, 8 outputs per image); the
# others get the same policies with small ranges (var.services). The api consumes no queue:
# its task count follows its ALB's requests per task and its CPU (api.tf), within the same
# min_count..max_count of var.services.

resource "aws_appautoscaling_target" "service" {
  for_each = local.services

  service_namespace  = "ecs"
  resource_id        = "service/${aws_ecs_cluster.this.name}/${aws_ecs_service.service[each.key].name}"
  scalable_dimension = "ecs:service:DesiredCount"
  min_capacity       = var.services[each.key].min_count
  max_capacity       = var.services[each.key].max_count
}

resource "aws_appautoscaling_policy" "backlog_per_task" {
  for_each = local.consumers

  name               = "${var.name}-${each.key}-backlog-per-task"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.service[each.key].service_namespace
  resource_id        = aws_appautoscaling_target.service[each.key].resource_id
  scalable_dimension = aws_appautoscaling_target.service[each.key].scalable_dimension

  target_tracking_scaling_policy_configuration {
    target_value       = var.services[each.key].backlog_per_task
    scale_out_cooldown = 60
    scale_in_cooldown  = 300

    customized_metric_specification {
      metrics {
        id          = "visible"
        return_data = false
        metric_stat {
          stat = "Sum"
          metric {
            namespace   = "AWS/SQS"
            metric_name = "ApproximateNumberOfMessagesVisible"
            dimensions {
              name  = "QueueName"
              value = aws_sqs_queue.queue[local.services[each.key].queue].name
            }
          }
        }
      }

      metrics {
        id          = "tasks"
        return_data = false
        metric_stat {
          stat = "Average"
          metric {
            namespace   = "ECS/ContainerInsights"
            metric_name = "RunningTaskCount"
            dimensions {
              name  = "ClusterName"
              value = aws_ecs_cluster.this.name
            }
            dimensions {
              name  = "ServiceName"
              value = aws_ecs_service.service[each.key].name
            }
          }
        }
      }

      metrics {
        id          = "backlog_per_task"
        label       = "visible messages per running task"
        expression  = "IF(tasks > 0, visible / tasks, visible)"
        return_data = true
      }
    }
  }
}

resource "aws_appautoscaling_policy" "oldest_message" {
  for_each = local.consumers

  name               = "${var.name}-${each.key}-oldest-message"
  policy_type        = "StepScaling"
  service_namespace  = aws_appautoscaling_target.service[each.key].service_namespace
  resource_id        = aws_appautoscaling_target.service[each.key].resource_id
  scalable_dimension = aws_appautoscaling_target.service[each.key].scalable_dimension

  step_scaling_policy_configuration {
    adjustment_type         = "ChangeInCapacity"
    cooldown                = 120
    metric_aggregation_type = "Maximum"

    # Bounds are relative to the alarm threshold (max_message_age seconds).
    step_adjustment {
      metric_interval_lower_bound = 0
      metric_interval_upper_bound = var.services[each.key].max_message_age
      scaling_adjustment          = 1
    }
    step_adjustment {
      metric_interval_lower_bound = var.services[each.key].max_message_age
      scaling_adjustment          = 3
    }
  }
}

resource "aws_cloudwatch_metric_alarm" "oldest_message" {
  for_each = local.consumers

  alarm_name          = "${var.name}-${each.key}-oldest-message"
  alarm_description   = "The oldest message of ${local.queues[local.services[each.key].queue].name} waits longer than ${var.services[each.key].max_message_age} s: add ${each.key} tasks."
  namespace           = "AWS/SQS"
  metric_name         = "ApproximateAgeOfOldestMessage"
  dimensions          = { QueueName = aws_sqs_queue.queue[local.services[each.key].queue].name }
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 2
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.services[each.key].max_message_age
  treat_missing_data  = "notBreaching"
  alarm_actions       = [aws_appautoscaling_policy.oldest_message[each.key].arn]
}

# Messages in a dead-letter queue need a person (`ingest dlq`): alarm on any, to the alarms
# topic (alarms.tf has the other alarms that reach a person).
resource "aws_cloudwatch_metric_alarm" "dead_letters" {
  for_each = local.queues

  alarm_name          = "${var.name}-${each.key}-dead-letters"
  alarm_description   = "${each.value.dead_letter_name} holds messages that failed ${each.value.max_receive_count} times or were rejected."
  namespace           = "AWS/SQS"
  metric_name         = "ApproximateNumberOfMessagesVisible"
  dimensions          = { QueueName = aws_sqs_queue.dead_letter[each.key].name }
  statistic           = "Maximum"
  period              = 300
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
}
