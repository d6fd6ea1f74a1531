# What each service consumes, sends and touches in S3: the least privilege of its task role
# and the environment of its container. Pure data; the resources are in iam.tf and ecs.tf.
#
#   batcher    q.batch   → read uploads/ ; tag uploads/ (a rejected ZIP expires, see
#                          topology.json) ; write + delete originals/ ; delete previews'
#                          renditions/ and previews/families/ (the garbage sweep) ; list
#                          both buckets ; send render, preview (safety net), index (a new
#                          version that needs no render) ; publish the domain events of its
#                          outbox to the events topic and the events bus (the only publisher)
#   processor  q.render, q.render-slow (its slow lane: renders that overran a few seconds)
#                        → read originals/ ; list uploads ; write previews bucket ;
#                          send preview + index, render-slow
#   previewer  q.preview → read+write previews bucket ; queue depth of q.render and
#                          q.render-slow (the safety net) ; send index
#   indexer    q.index   → no S3 ; no sends (search backend: PostgreSQL full text by default)
#   api        no queue  → HTTP behind the ALB of api.tf: signs upload forms (presigned
#                          POST) for uploads/<contributor>/<id>.zip: a form acts with the
#                          signer's rights, so the role needs s3:PutObject there ; heads
#                          uploads/ (is the ZIP there yet?) ; lists the uploads bucket (a
#                          missing ZIP answers 404, not 403) ; no sends, no events
#
# Every consumer may also send to its own queue (a message handed back during an outage,
# the batcher's reconciliation re-announcing a lost upload event, the previewer's re-delay)
# and to its own DLQ: the consumer runtime moves invalid messages and permanent failures
# there itself (queue name + "-dlq"), besides SQS's redrive.
#
# `queue`: the queue it consumes (null: the api, which consumes none); `also_consumes`: queues
# consumed beside `queue` (autoscaling follows `queue`).
# `topics`: sns:Publish (PublishBatch) on these topic roles of topology.json, plus
# sns:ListTopics, which finds a topic's ARN by its name and has no resource-level grant.
# `buses`: events:PutEvents on these bus roles. Only the batcher publishes (its outbox).
# `lists`: s3:ListBucket on the whole bucket, to list prefixes, and so that a missing
# object answers 404 rather than 403. `reads`: sqs:GetQueueAttributes on other queues.

locals {
  services = {
    batcher = {
      queue         = "batch"
      also_consumes = []
      sends         = ["render", "preview", "index"]
      reads         = []
      lists         = ["uploads", "previews"]
      topics        = ["events"]
      buses         = ["events"]
      s3 = [
        { bucket = "uploads", keys = "uploads/*", actions = ["s3:GetObject", "s3:PutObjectTagging", "s3:PutObjectVersionTagging"] },
        { bucket = "uploads", keys = "originals/*", actions = ["s3:PutObject", "s3:DeleteObject"] },
        { bucket = "previews", keys = "renditions/*", actions = ["s3:DeleteObject"] },
        { bucket = "previews", keys = "previews/families/*", actions = ["s3:DeleteObject"] },
      ]
    }
    processor = {
      queue         = "render"
      also_consumes = ["render_slow"]
      sends         = ["preview", "index", "render_slow"]
      reads         = []
      lists         = ["uploads"]
      topics        = []
      buses         = []
      s3 = [
        { bucket = "uploads", keys = "originals/*", actions = ["s3:GetObject"] },
        { bucket = "previews", keys = "*", actions = ["s3:PutObject"] },
      ]
    }
    previewer = {
      queue         = "preview"
      also_consumes = []
      sends         = ["index"]
      reads         = ["render", "render_slow"]
      lists         = []
      topics        = []
      buses         = []
      s3 = [
        { bucket = "previews", keys = "*", actions = ["s3:GetObject", "s3:PutObject"] },
      ]
    }
    indexer = {
      queue         = "index"
      also_consumes = []
      sends         = []
      reads         = []
      lists         = []
      topics        = []
      buses         = []
      s3            = []
    }
    api = {
      queue         = null
      also_consumes = []
      sends         = []
      reads         = []
      lists         = ["uploads"]
      topics        = []
      buses         = []
      s3 = [
        { bucket = "uploads", keys = "uploads/*", actions = ["s3:PutObject", "s3:GetObject"] },
      ]
    }
  }

  # The services that consume a queue: autoscaling on its backlog, the error-rate alarms and
  # the message widgets of the dashboard are theirs (the api has its ALB's instead: api.tf).
  consumers = { for name, svc in local.services : name => svc if svc.queue != null }

  # Per service, derived: `consumes`, the queues it receives from (its queue and
  # also_consumes; none for the api), and `queues`, every queue it receives from or sends to.
  service_grants = {
    for name, svc in local.services : name => merge(svc, {
      consumes = svc.queue == null ? [] : concat([svc.queue], svc.also_consumes)
      queues   = distinct(concat(svc.queue == null ? [] : concat([svc.queue], svc.also_consumes), svc.sends))
    })
  }

  # The one-off CLI task (ecs.tf, role aws_iam_role.cli). `ingest migrate` needs the database
  # only; the operators' commands run in the same task definition with --overrides:
  #
  #   ingest dlq list|redrive <queue>  any queue of topology.json: read, hide (change the
  #                                    visibility of) and delete its DLQ's messages; send them
  #                                    back to the queue
  #   ingest reconcile                 list uploads/ ; send S3 events to the batch queue
  #   ingest backfill                  read originals/ (a missing one is reported: `lists`) ;
  #                                    write renditions to the previews bucket
  #
  # `dead_letters`: the queue roles whose DLQ it may read; `sends`: queues it may send to.
  # Not `ingest bootstrap` (Terraform owns the topology), `upload`, `events tail` or `demo`:
  # those run on a workstation with a person's credentials.
  cli_task = {
    dead_letters = keys(local.queues)
    sends        = keys(local.queues)
    lists        = ["uploads"]
    s3 = [
      { bucket = "uploads", keys = "originals/*", actions = ["s3:GetObject"] },
      { bucket = "previews", keys = "*", actions = ["s3:PutObject"] },
    ]
  }

  # Reading a DLQ through, holding what was read (ingest_cli.dlq): no GetQueueAttributes.
  dead_letter_actions = [
    "sqs:ReceiveMessage",
    "sqs:DeleteMessage",
    "sqs:ChangeMessageVisibility",
    "sqs:GetQueueUrl",
  ]

  cli_task_policy = jsonencode({
    Version = "2012-10-17"
    Statement = concat(
      [
        {
          Sid      = "ReadDeadLetters"
          Effect   = "Allow"
          Action   = local.dead_letter_actions
          Resource = [for q in local.cli_task.dead_letters : local.dead_letter_arns[q]]
        },
        {
          Sid      = "Send"
          Effect   = "Allow"
          Action   = local.send_actions
          Resource = [for q in local.cli_task.sends : local.queue_arns[q]]
        },
      ],
      [
        for b in [local.cli_task.lists] : {
          Sid      = "List"
          Effect   = "Allow"
          Action   = ["s3:ListBucket"]
          Resource = [for role in b : local.bucket_arns[role]]
        } if length(b) > 0
      ],
      [
        for i, grant in local.cli_task.s3 : {
          Sid      = "S3${i}"
          Effect   = "Allow"
          Action   = grant.actions
          Resource = ["${local.bucket_arns[grant.bucket]}/${grant.keys}"]
        }
      ],
    )
  })

  consume_actions = [
    "sqs:ReceiveMessage",
    "sqs:DeleteMessage",
    "sqs:ChangeMessageVisibility",
    "sqs:GetQueueAttributes",
    "sqs:GetQueueUrl",
  ]
  send_actions = ["sqs:SendMessage", "sqs:GetQueueUrl"]

  task_policies = {
    for name, svc in local.service_grants : name => jsonencode({
      Version = "2012-10-17"
      Statement = concat(
        [
          for q in [svc.consumes] : {
            Sid      = "Consume"
            Effect   = "Allow"
            Action   = local.consume_actions
            Resource = [for role in q : local.queue_arns[role]]
          } if length(q) > 0
        ],
        [
          for q in [svc.queues] : {
            Sid    = "Send"
            Effect = "Allow"
            Action = local.send_actions
            Resource = distinct(concat(
              [for role in svc.consumes : local.queue_arns[role]],
              [for role in svc.consumes : local.dead_letter_arns[role]],
              [for role in svc.sends : local.queue_arns[role]],
            ))
          } if length(q) > 0
        ],
        [
          for q in [svc.reads] : {
            Sid      = "QueueAttributes"
            Effect   = "Allow"
            Action   = ["sqs:GetQueueAttributes", "sqs:GetQueueUrl"]
            Resource = [for role in q : local.queue_arns[role]]
          } if length(q) > 0
        ],
        [
          for b in [svc.lists] : {
            Sid      = "List"
            Effect   = "Allow"
            Action   = ["s3:ListBucket"]
            Resource = [for role in b : local.bucket_arns[role]]
          } if length(b) > 0
        ],
        [
          for t in [svc.topics] : {
            Sid      = "PublishEvents"
            Effect   = "Allow"
            Action   = ["sns:Publish"]
            Resource = [for role in t : local.topic_arns[role]]
          } if length(t) > 0
        ],
        [
          for t in [svc.topics] : {
            Sid      = "FindTopics"
            Effect   = "Allow"
            Action   = ["sns:ListTopics"]
            Resource = ["*"] # ListTopics takes no resource
          } if length(t) > 0
        ],
        [
          for b in [svc.buses] : {
            Sid      = "PutEvents"
            Effect   = "Allow"
            Action   = ["events:PutEvents"]
            Resource = [for role in b : local.bus_arns[role]]
          } if length(b) > 0
        ],
        [
          for i, grant in svc.s3 : {
            Sid      = "S3${i}"
            Effect   = "Allow"
            Action   = grant.actions
            Resource = ["${local.bucket_arns[grant.bucket]}/${grant.keys}"]
          }
        ],
      )
    })
  }

  # The container environment: names from the topology, the standard AWS/OTel variables,
  # the visibility timeout of the queue it consumes (from topology.json), then overrides.
  container_environment = {
    for name, svc in local.services : name => merge(
      local.name_environment,
      {
        AWS_REGION         = local.region
        INGEST_LOG_FORMAT  = "json"
        INGEST_LOG_LEVEL   = var.log_level
        INGEST_HEALTH_PORT = "8080"
        # Same share in every service: an upload's trace has all its calls' spans or none.
        INGEST_TRACE_CLIENT_SPANS = tostring(var.trace_client_spans)
      },
      # The visibility timeout of the queue it consumes, from topology.json (not the api's).
      svc.queue == null ? {} : { INGEST_VISIBILITY_TIMEOUT = tostring(local.queues[svc.queue].visibility_timeout) },
      # Traces and metrics go to the collector beside it (collector.tf), over OTLP/HTTP;
      # metrics as deltas, what CloudWatch's embedded metric format adds up.
      {
        OTEL_EXPORTER_OTLP_ENDPOINT                       = local.collector_otlp_endpoint
        OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE = "DELTA"
      },
      # One render process per vCPU of the task (os.cpu_count() may see the host's CPUs).
      name == "processor" ? { INGEST_RENDER_WORKERS = tostring(max(1, floor(var.services[name].cpu / 1024))) } : {},
      # The api: its port (the target group's, api.tf), and where renditions are served.
      name == "api" ? { INGEST_API_PORT = tostring(local.api_port) } : {},
      name == "api" && var.public_base_url != "" ? { INGEST_PUBLIC_BASE_URL = var.public_base_url } : {},
      lookup(var.service_environment, name, {}),
    )
  }
}
