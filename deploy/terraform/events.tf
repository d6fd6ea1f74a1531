# The SNS topics and EventBridge buses of topology.json ("topics", "buses" and each bus's
# "rules"), named by the settings they refer to (events_topic, alarms_topic, event_bus).
#
#   events topic  the domain events (CloudEvents JSON, message attributes type and subject for
#                 subscription filter policies): subscribe Slack, e-mail or SQS yourself.
#   alarms topic  every CloudWatch alarm of alarms.tf and autoscaling.tf's DLQ alarms;
#                 var.alarm_email subscribes a person.
#   events bus    the same domain events for EventBridge rules (Source "ingest", DetailType the
#                 event's type). Each rule of the file gets an example target here: a
#                 CloudWatch log group /aws/events/<name>/<rule>, to see what it matches.
#
# Only the batcher's outbox publishes: its task role alone has sns:Publish and
# events:PutEvents (services.tf), and the resource policies below refuse any other principal.

# --- SNS -------------------------------------------------------------------------------------

resource "aws_sns_topic" "topic" {
  for_each = local.topics

  name = each.value.name
  # No KMS key: CloudWatch alarms cannot publish to a topic encrypted with the AWS-managed
  # alias/aws/sns key; use a customer-managed key that allows cloudwatch.amazonaws.com.

  tags = { role = each.key }
}

# The publishers of a topic are the services whose `topics` name it (services.tf): nobody
# else may publish, whatever their IAM policies say (a hand-published event would carry no
# outbox sequence). Topics that no service publishes (alarms: CloudWatch) keep SNS's default.
locals {
  topic_publishers = {
    for role in keys(local.topics) : role => [
      for name, svc in local.services : aws_iam_role.task[name].arn if contains(svc.topics, role)
    ] if anytrue([for svc in values(local.services) : contains(svc.topics, role)])
  }
  bus_publishers = {
    for role in keys(local.buses) : role => [
      for name, svc in local.services : aws_iam_role.task[name].arn if contains(svc.buses, role)
    ] if anytrue([for svc in values(local.services) : contains(svc.buses, role)])
  }
}

resource "aws_sns_topic_policy" "publishers" {
  for_each = local.topic_publishers

  arn = aws_sns_topic.topic[each.key].arn
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid       = "OwnerManages"
        Effect    = "Allow"
        Principal = { AWS = "arn:${local.partition}:iam::${local.account_id}:root" }
        Action = [
          "sns:GetTopicAttributes",
          "sns:SetTopicAttributes",
          "sns:AddPermission",
          "sns:RemovePermission",
          "sns:DeleteTopic",
          "sns:Subscribe",
          "sns:ListSubscriptionsByTopic",
        ]
        Resource = aws_sns_topic.topic[each.key].arn
      },
      {
        Sid       = "OnlyTheOutboxPublishes"
        Effect    = "Deny"
        Principal = "*"
        Action    = "sns:Publish"
        Resource  = aws_sns_topic.topic[each.key].arn
        Condition = { StringNotEquals = { "aws:PrincipalArn" = each.value } }
      },
    ]
  })
}

resource "aws_sns_topic_subscription" "alarm_email" {
  count = var.alarm_email == "" ? 0 : 1

  topic_arn = aws_sns_topic.topic["alarms"].arn
  protocol  = "email"
  endpoint  = var.alarm_email
}

# --- EventBridge -----------------------------------------------------------------------------

resource "aws_cloudwatch_event_bus" "bus" {
  for_each = { for role, b in local.buses : role => b if b.name != "default" }

  name = each.value.name
  tags = { role = each.key }
}

resource "aws_cloudwatch_event_bus_policy" "publishers" {
  for_each = { for role, arns in local.bus_publishers : role => arns if local.buses[role].name != "default" }

  event_bus_name = aws_cloudwatch_event_bus.bus[each.key].name
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Sid       = "OnlyTheOutboxPutsEvents"
      Effect    = "Deny"
      Principal = "*"
      Action    = "events:PutEvents"
      Resource  = aws_cloudwatch_event_bus.bus[each.key].arn
      Condition = { StringNotEquals = { "aws:PrincipalArn" = each.value } }
    }]
  })
}

resource "aws_cloudwatch_event_rule" "rule" {
  for_each = local.bus_rules

  name           = each.value.name
  description    = each.value.description
  event_bus_name = local.buses[each.value.bus].name
  event_pattern  = each.value.pattern

  depends_on = [aws_cloudwatch_event_bus.bus]
}

# The example target of every rule: a log group (EventBridge wants the /aws/events/ prefix).
# Add your own targets (Lambda, Step Functions, SQS, API destinations) beside it.
resource "aws_cloudwatch_log_group" "event_rule" {
  for_each = local.bus_rules

  name              = "/aws/events/${var.name}/${each.value.name}"
  retention_in_days = var.log_retention_days
}

resource "aws_cloudwatch_event_target" "log_group" {
  for_each = local.bus_rules

  rule           = aws_cloudwatch_event_rule.rule[each.key].name
  event_bus_name = aws_cloudwatch_event_rule.rule[each.key].event_bus_name
  target_id      = "log-group"
  arn            = aws_cloudwatch_log_group.event_rule[each.key].arn
}

# EventBridge writes to CloudWatch Logs under a resource policy (a target role is not
# used for log groups): streams in these log groups, events from these rules only.
resource "aws_cloudwatch_log_resource_policy" "event_rules" {
  count = length(local.bus_rules) > 0 ? 1 : 0

  policy_name = "${var.name}-event-rules"
  policy_document = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid       = "EventRulesCreateStreams"
        Effect    = "Allow"
        Principal = { Service = ["events.amazonaws.com", "delivery.logs.amazonaws.com"] }
        Action    = "logs:CreateLogStream"
        Resource  = [for g in aws_cloudwatch_log_group.event_rule : "${g.arn}:*"]
      },
      {
        Sid       = "EventRulesPutEvents"
        Effect    = "Allow"
        Principal = { Service = ["events.amazonaws.com", "delivery.logs.amazonaws.com"] }
        Action    = "logs:PutLogEvents"
        Resource  = [for g in aws_cloudwatch_log_group.event_rule : "${g.arn}:*:*"]
        Condition = {
          ArnEquals = { "aws:SourceArn" = [for r in aws_cloudwatch_event_rule.rule : r.arn] }
        }
      },
    ]
  })
}
