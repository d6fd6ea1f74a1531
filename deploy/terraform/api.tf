# The HTTP API (services/api) behind an internet-facing Application Load Balancer. The ECS
# service, its task definition and its role are the ones of ecs.tf and iam.tf (the api is an
# entry of services.tf); this file is what only the api has:
#
#   internet ──443 (TLS: var.api_certificate_arn)──▶ ALB (public subnets) ──8000──▶ api tasks
#            ──80: redirect to 443                        └─ health check: GET /readyz on 8080
#
# The tasks stay in the private subnets, reachable from the ALB's security group only. Event
# streams (GET /v1/uploads/{id}/events) send a comment every INGEST_API_HEARTBEAT_INTERVAL
# (15 s) and end after INGEST_API_STREAM_TIMEOUT (1 h): the ALB's idle timeout must be longer
# than the heartbeat (and shorter than aiohttp's keep-alive, 3630 s), or the ALB cuts idle
# streams. On a deployment or scale-in ECS deregisters a task first (new requests go to the
# others), waits the deregistration delay for the requests under way, then sends SIGTERM: the
# API turns not ready, ends its event streams (browsers reconnect, to another task, and get
# the whole state again) and finishes what is left within INGEST_DRAIN_TIMEOUT (60 s), under
# the task's stopTimeout (120 s).

locals {
  # INGEST_API_PORT of the api's container (services.tf) and the target group's port.
  api_port = 8000

  api_origin = "https://${var.api_domain != "" ? var.api_domain : aws_lb.api.dns_name}"

  # The settings whose value Terraform holds for topology.json's CORS rules (topology.tf).
  cors_origin_settings = {
    api_cors_origins = length(var.api_cors_origins) > 0 ? var.api_cors_origins : [local.api_origin]
  }

  # ALB → target idle time (s) and how long a deregistered task keeps its requests.
  api_idle_timeout        = 75
  api_deregistration_time = 30
}

resource "aws_security_group" "api_lb" {
  name        = "${var.name}-api-lb"
  description = "ingest API load balancer: HTTPS (and HTTP, redirected) from var.api_allowed_cidrs"
  vpc_id      = var.vpc_id
}

resource "aws_vpc_security_group_ingress_rule" "api_lb" {
  for_each = { for pair in setproduct([443, 80], var.api_allowed_cidrs) : "${pair[0]}-${pair[1]}" => pair }

  security_group_id = aws_security_group.api_lb.id
  description       = each.value[0] == 443 ? "HTTPS" : "HTTP (redirected to HTTPS)"
  ip_protocol       = "tcp"
  from_port         = each.value[0]
  to_port           = each.value[0]
  cidr_ipv4         = each.value[1]
}

# The api's tasks: their two ports, from the load balancer only (they are also in the
# egress-only aws_security_group.tasks of ecs.tf, which reaches AWS and PostgreSQL).
resource "aws_security_group" "api_tasks" {
  name        = "${var.name}-api-tasks"
  description = "ingest API tasks: the API and its health port, from the API load balancer only"
  vpc_id      = var.vpc_id
}

locals {
  # port → what the ALB sends there
  api_task_ports = {
    api    = local.api_port
    health = local.health_port
  }
}

resource "aws_vpc_security_group_egress_rule" "api_lb" {
  for_each = local.api_task_ports

  security_group_id            = aws_security_group.api_lb.id
  description                  = "to the API tasks: ${each.key}"
  ip_protocol                  = "tcp"
  from_port                    = each.value
  to_port                      = each.value
  referenced_security_group_id = aws_security_group.api_tasks.id
}

resource "aws_vpc_security_group_ingress_rule" "api_tasks" {
  for_each = local.api_task_ports

  security_group_id            = aws_security_group.api_tasks.id
  description                  = "from the API load balancer: ${each.key}"
  ip_protocol                  = "tcp"
  from_port                    = each.value
  to_port                      = each.value
  referenced_security_group_id = aws_security_group.api_lb.id
}

resource "aws_lb" "api" {
  name               = "${var.name}-api"
  load_balancer_type = "application"
  internal           = false
  subnets            = var.public_subnet_ids
  security_groups    = [aws_security_group.api_lb.id]

  idle_timeout               = local.api_idle_timeout
  drop_invalid_header_fields = true
}

# Targets are the tasks' IP addresses (awsvpc), on the API's port.
resource "aws_lb_target_group" "api" {
  name                 = "${var.name}-api"
  vpc_id               = var.vpc_id
  target_type          = "ip"
  protocol             = "HTTP"
  port                 = local.api_port
  deregistration_delay = local.api_deregistration_time

  # Readiness on the health port (the API's own port has no /readyz): 503 while a task
  # starts, drains, or cannot reach PostgreSQL or S3, so the ALB sends it nothing then.
  health_check {
    protocol            = "HTTP"
    port                = tostring(local.health_port)
    path                = "/readyz"
    matcher             = "200"
    interval            = 15
    timeout             = 5
    healthy_threshold   = 2
    unhealthy_threshold = 2
  }
}

resource "aws_lb_listener" "api_https" {
  load_balancer_arn = aws_lb.api.arn
  port              = 443
  protocol          = "HTTPS"
  ssl_policy        = "ELBSecurityPolicy-TLS13-1-2-2021-06"
  certificate_arn   = var.api_certificate_arn

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.api.arn
  }
}

resource "aws_lb_listener" "api_http" {
  load_balancer_arn = aws_lb.api.arn
  port              = 80
  protocol          = "HTTP"

  default_action {
    type = "redirect"
    redirect {
      protocol    = "HTTPS"
      port        = "443"
      status_code = "HTTP_301"
    }
  }
}

# --- scaling: requests per task and CPU (the api consumes no queue) ---------------------------
# Application Auto Scaling takes the larger answer of the two target-tracking policies. An
# open event stream is one request for as long as it lasts: CPU catches many of them.

resource "aws_appautoscaling_policy" "api_requests" {
  name               = "${var.name}-api-requests-per-task"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.service["api"].service_namespace
  resource_id        = aws_appautoscaling_target.service["api"].resource_id
  scalable_dimension = aws_appautoscaling_target.service["api"].scalable_dimension

  target_tracking_scaling_policy_configuration {
    target_value       = var.services["api"].requests_per_task
    scale_out_cooldown = 60
    scale_in_cooldown  = 300

    predefined_metric_specification {
      predefined_metric_type = "ALBRequestCountPerTarget"
      resource_label         = "${aws_lb.api.arn_suffix}/${aws_lb_target_group.api.arn_suffix}"
    }
  }
}

resource "aws_appautoscaling_policy" "api_cpu" {
  name               = "${var.name}-api-cpu"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.service["api"].service_namespace
  resource_id        = aws_appautoscaling_target.service["api"].resource_id
  scalable_dimension = aws_appautoscaling_target.service["api"].scalable_dimension

  target_tracking_scaling_policy_configuration {
    target_value       = var.services["api"].cpu_percent
    scale_out_cooldown = 60
    scale_in_cooldown  = 300

    predefined_metric_specification {
      predefined_metric_type = "ECSServiceAverageCPUUtilization"
    }
  }
}

# --- alarms (to the alarms topic, like alarms.tf's) -------------------------------------------

# 5xx answered by the tasks or by the ALB (no healthy task, a task that reset the connection)
# over all requests. Also the api's deployment alarm (ecs.tf): a rollout during which it
# fires is rolled back.
resource "aws_cloudwatch_metric_alarm" "api_5xx_rate" {
  alarm_name          = "${var.name}-api-5xx-rate"
  alarm_description   = "More than ${var.api_5xx_rate_alarm_threshold * 100}% of the API's requests were answered 5xx (by its tasks or its load balancer) in 3 of the last 5 periods of 5 minutes: see the api's logs (api.failed) and its target group's health."
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.api_5xx_rate_alarm_threshold
  evaluation_periods  = 5
  datapoints_to_alarm = 3
  treat_missing_data  = "notBreaching" # no requests, no rate
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions

  metric_query {
    id          = "rate"
    label       = "api: 5xx / requests"
    expression  = "IF(requests > 0, (FILL(target_5xx, 0) + FILL(elb_5xx, 0)) / requests, 0)"
    return_data = true
  }

  dynamic "metric_query" {
    for_each = {
      requests   = "RequestCount"
      target_5xx = "HTTPCode_Target_5XX_Count"
      elb_5xx    = "HTTPCode_ELB_5XX_Count"
    }
    content {
      id = metric_query.key
      metric {
        namespace   = "AWS/ApplicationELB"
        metric_name = metric_query.value
        dimensions  = { LoadBalancer = aws_lb.api.arn_suffix }
        stat        = "Sum"
        period      = 300
      }
    }
  }
}

resource "aws_cloudwatch_metric_alarm" "api_response_time" {
  alarm_name          = "${var.name}-api-response-time"
  alarm_description   = "The API's p99 response time exceeded ${var.api_response_time_alarm_seconds} s in 3 of the last 5 periods of 5 minutes: PostgreSQL or S3 slow, or too few tasks."
  namespace           = "AWS/ApplicationELB"
  metric_name         = "TargetResponseTime"
  dimensions          = { LoadBalancer = aws_lb.api.arn_suffix }
  extended_statistic  = "p99"
  period              = 300
  evaluation_periods  = 5
  datapoints_to_alarm = 3
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.api_response_time_alarm_seconds
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
}
