# One queue and one dead-letter queue per entry of topology.json's "queues".

resource "aws_sqs_queue" "dead_letter" {
  for_each = local.queues

  name                      = each.value.dead_letter_name
  message_retention_seconds = local.topology.dead_letter.message_retention
  sqs_managed_sse_enabled   = true

  tags = { role = each.key, kind = "dead-letter" }
}

resource "aws_sqs_queue" "queue" {
  for_each = local.queues

  name                       = each.value.name
  visibility_timeout_seconds = each.value.visibility_timeout
  message_retention_seconds  = each.value.message_retention
  receive_wait_time_seconds  = each.value.receive_wait_time
  sqs_managed_sse_enabled    = true # SSE-SQS: S3 notifications work with it, no KMS grants needed

  redrive_policy = jsonencode({
    deadLetterTargetArn = aws_sqs_queue.dead_letter[each.key].arn
    maxReceiveCount     = each.value.max_receive_count
  })

  tags = { role = each.key, kind = "work" }
}

# Only its own source queue may redrive into a DLQ.
resource "aws_sqs_queue_redrive_allow_policy" "dead_letter" {
  for_each = local.queues

  queue_url = aws_sqs_queue.dead_letter[each.key].id
  redrive_allow_policy = jsonencode({
    redrivePermission = "byQueue"
    sourceQueueArns   = [aws_sqs_queue.queue[each.key].arn]
  })
}

# S3 may send event notifications to the queues topology.json says, from those buckets only.
resource "aws_sqs_queue_policy" "s3_events" {
  for_each = local.s3_senders

  queue_url = aws_sqs_queue.queue[each.key].id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Sid       = "AllowS3EventNotifications"
      Effect    = "Allow"
      Principal = { Service = "s3.amazonaws.com" }
      Action    = "sqs:SendMessage"
      Resource  = aws_sqs_queue.queue[each.key].arn
      Condition = {
        ArnLike      = { "aws:SourceArn" = [for b in each.value : aws_s3_bucket.bucket[b].arn] }
        StringEquals = { "aws:SourceAccount" = local.account_id }
      }
    }]
  })
}
