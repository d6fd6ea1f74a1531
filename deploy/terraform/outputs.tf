output "queue_urls" {
  description = "Queue role → URL (and its DLQ)."
  value = {
    for role, q in aws_sqs_queue.queue : role => {
      url         = q.url
      dead_letter = aws_sqs_queue.dead_letter[role].url
    }
  }
}

output "buckets" {
  description = "Bucket role → name."
  value       = { for role, b in aws_s3_bucket.bucket : role => b.bucket }
}

output "ecr_repositories" {
  description = "Image → repository URL (<name>-<image>, tags: the commit SHA, and deployed-<environment>-... once it ran: ecr.tf)."
  value       = { for name, r in aws_ecr_repository.image : name => r.repository_url }
}

output "cluster" {
  value = aws_ecs_cluster.this.name
}

output "cli_task_definition" {
  description = "For `aws ecs run-task` (ingest migrate, dlq, reconcile, backfill): the revision Terraform registered; the deploy workflow registers later ones of the same family."
  value       = aws_ecs_task_definition.cli.arn
}

output "task_security_group" {
  value = aws_security_group.tasks.id
}

output "database_endpoint" {
  value = aws_db_instance.db.endpoint
}

output "database_url_secret" {
  value = aws_secretsmanager_secret.database_url.arn
}

output "topics" {
  description = "Topic role (topology.json) → SNS topic ARN: subscribe to events; alarms notifies a person."
  value       = { for role, t in aws_sns_topic.topic : role => t.arn }
}

output "event_buses" {
  description = "Bus role → EventBridge bus name, and the rules Terraform put on it."
  value = {
    for role, b in local.buses : role => {
      name  = b.name
      rules = sort([for key, r in local.bus_rules : r.name if r.bus == role])
    }
  }
}

output "dashboard" {
  description = "The CloudWatch dashboard of queues, services and alarms."
  value       = aws_cloudwatch_dashboard.ingest.dashboard_name
}

output "github_environment_variables" {
  description = "The variables of GitHub environment var.environment that deploy.yml and rollback.yml read (Settings → Environments → Variables); null without var.github_repository."
  value = local.github_deploy ? {
    AWS_REGION           = local.region
    AWS_DEPLOY_ROLE_ARN  = aws_iam_role.github_deploy[0].arn
    NAME_PREFIX          = var.name
    ECS_CLUSTER          = aws_ecs_cluster.this.name
    CLI_SUBNETS          = join(",", var.private_subnet_ids)
    CLI_SECURITY_GROUP   = aws_security_group.tasks.id
    CLI_ASSIGN_PUBLIC_IP = var.assign_public_ip ? "ENABLED" : "DISABLED"
  } : null
}

output "api_load_balancer" {
  description = "The API's load balancer: its DNS name (point api_domain's DNS alias at it, with zone_id) and the URL clients use."
  value = {
    dns_name = aws_lb.api.dns_name
    zone_id  = aws_lb.api.zone_id
    url      = local.api_origin
  }
}
