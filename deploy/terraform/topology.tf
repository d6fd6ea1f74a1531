# The queue, bucket, lifecycle and notification topology, read from the one file that
# declares it.
# `ingest bootstrap` applies the same file to moto/LocalStack; nothing here repeats a number
# from it. Names come from the variables, which mirror the settings (INGEST_*_QUEUE,
# INGEST_*_BUCKET) that the file refers to by field name ("setting").

locals {
  topology = jsondecode(file("${path.module}/../../libs/common/src/ingest_common/topology.json"))

  # IngestSettings field → value, for every name the topology refers to.
  names = {
    uploads_bucket    = var.uploads_bucket
    previews_bucket   = var.previews_bucket
    batch_queue       = var.batch_queue
    render_queue      = var.render_queue
    render_slow_queue = var.render_slow_queue
    preview_queue     = var.preview_queue
    index_queue       = var.index_queue
  }

  dead_letter_suffix = local.topology.dead_letter.suffix

  # role ("batch", "render", ...) → queue
  queues = {
    for role, q in local.topology.queues : role => {
      setting            = q.setting
      name               = local.names[q.setting]
      dead_letter_name   = "${local.names[q.setting]}${local.dead_letter_suffix}"
      visibility_timeout = q.visibility_timeout
      max_receive_count  = q.max_receive_count
      message_retention  = q.message_retention
      receive_wait_time  = q.receive_wait_time
    }
  }

  # role ("uploads", "previews") → bucket
  buckets = {
    for role, b in local.topology.buckets : role => {
      setting = b.setting
      name    = local.names[b.setting]
    }
  }

  # role → the file's lifecycle rules, every field present (null when the file omits it),
  # so that s3.tf can add its own rules of the same shape.
  lifecycle_rules = {
    for role, b in local.topology.buckets : role => [
      for r in try(b.lifecycle, []) : {
        id                              = r.id
        prefix                          = try(r.prefix, "")
        tags                            = try(tomap(r.tags), {})
        expiration_days                 = try(r.expiration_days, null)
        abort_incomplete_multipart_days = try(r.abort_incomplete_multipart_days, null)
        noncurrent_days                 = null
      }
    ]
  }

  # Every S3 → SQS notification; the id is the one `ingest bootstrap` gives it.
  notifications = flatten([
    for bucket, b in local.topology.buckets : [
      for n in b.notifications : {
        id     = "${bucket}-to-${n.queue}"
        bucket = bucket
        queue  = n.queue
        events = n.events
        prefix = n.prefix
        suffix = try(n.suffix, "")
      }
    ]
  ])

  # queue role → bucket roles allowed to send it events (the queue policy)
  s3_senders = {
    for queue in distinct([for n in local.notifications : n.queue]) :
    queue => distinct([for n in local.notifications : n.bucket if n.queue == queue])
  }

  queue_arns       = { for role, q in local.queues : role => "arn:${local.partition}:sqs:${local.region}:${local.account_id}:${q.name}" }
  dead_letter_arns = { for role, q in local.queues : role => "arn:${local.partition}:sqs:${local.region}:${local.account_id}:${q.dead_letter_name}" }
  bucket_arns      = { for role, b in local.buckets : role => "arn:${local.partition}:s3:::${b.name}" }

  # INGEST_UPLOADS_BUCKET, INGEST_RENDER_QUEUE, ...: what every container is told.
  name_environment = { for setting, value in local.names : "INGEST_${upper(setting)}" => value }
}
