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
  description = "Image → repository URL (push ingest-<service>:<image_tag> here)."
  value       = { for name, r in aws_ecr_repository.image : name => r.repository_url }
}

output "cluster" {
  value = aws_ecs_cluster.this.name
}

output "cli_task_definition" {
  description = "For `aws ecs run-task` (ingest migrate)."
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
