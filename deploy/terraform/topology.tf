# The queue, bucket, lifecycle, notification, topic and event-bus topology, read from the one
# file that declares it.
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
    events_topic      = var.events_topic
    event_bus         = var.event_bus
    alarms_topic      = var.alarms_topic
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

  # role → the file's CORS rules (browsers POSTing the API's upload forms to the bucket).
  # Allowed origins: the value of the setting the rule names ("origins_setting") where
  # Terraform has one (local.cors_origin_settings, api.tf), else the file's "default_origins".
  cors_rules = {
    for role, b in local.topology.buckets : role => [
      for r in try(b.cors, []) : {
        id              = r.id
        origins         = lookup(local.cors_origin_settings, try(r.origins_setting, ""), r.default_origins)
        methods         = r.methods
        headers         = try(r.headers, [])
        expose_headers  = try(r.expose_headers, [])
        max_age_seconds = try(r.max_age_seconds, null)
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

  # role ("events", "alarms") → SNS topic
  topics = {
    for role, t in try(local.topology.topics, {}) : role => {
      setting = t.setting
      name    = local.names[t.setting]
    }
  }

  # role ("events") → EventBridge bus; "default" is the account's own bus, never created
  buses = {
    for role, b in try(local.topology.buses, {}) : role => {
      setting = b.setting
      name    = local.names[b.setting]
    }
  }

  # "<bus role>/<rule name>" → rule of that bus, its event pattern as the JSON put_rule takes
  bus_rules = merge([
    for bus, b in try(local.topology.buses, {}) : {
      for name, r in try(b.rules, {}) : "${bus}/${name}" => {
        bus         = bus
        name        = name
        description = r.description
        pattern     = jsonencode(r.pattern)
      }
    }
  ]...)

  queue_arns       = { for role, q in local.queues : role => "arn:${local.partition}:sqs:${local.region}:${local.account_id}:${q.name}" }
  dead_letter_arns = { for role, q in local.queues : role => "arn:${local.partition}:sqs:${local.region}:${local.account_id}:${q.dead_letter_name}" }
  bucket_arns      = { for role, b in local.buckets : role => "arn:${local.partition}:s3:::${b.name}" }
  topic_arns       = { for role, t in local.topics : role => "arn:${local.partition}:sns:${local.region}:${local.account_id}:${t.name}" }
  bus_arns         = { for role, b in local.buses : role => "arn:${local.partition}:events:${local.region}:${local.account_id}:event-bus/${b.name}" }

  # INGEST_UPLOADS_BUCKET, INGEST_RENDER_QUEUE, INGEST_EVENTS_TOPIC, ...: what every
  # container is told.
  name_environment = { for setting, value in local.names : "INGEST_${upper(setting)}" => value }
}
