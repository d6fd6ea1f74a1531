variable "name" {
  description = "Prefix of every resource that is not named by a setting (cluster, roles, log groups, database)."
  type        = string
  default     = "ingest"
}

variable "region" {
  description = "AWS region (becomes AWS_REGION in the containers)."
  type        = string
  default     = "us-east-1"
}

variable "tags" {
  description = "Extra tags on every resource."
  type        = map(string)
  default     = {}
}

# --- names: the settings (IngestSettings) and their defaults --------------------------------
# Each is an INGEST_<FIELD> of libs/common/src/ingest_common/settings.py with the same default;
# the containers get them as those variables. Bucket names are global: prefix them per
# account/environment in a real deployment (e.g. "acme-prod-ingest-uploads").

variable "uploads_bucket" {
  description = "INGEST_UPLOADS_BUCKET: contributors' ZIPs (uploads/) and extracted originals (originals/)."
  type        = string
  default     = "ingest-uploads"
}

variable "previews_bucket" {
  description = "INGEST_PREVIEWS_BUCKET: renditions and family mosaics."
  type        = string
  default     = "ingest-previews"
}

variable "batch_queue" {
  description = "INGEST_BATCH_QUEUE: S3 upload events → batcher. Its DLQ is this name + \"-dlq\"."
  type        = string
  default     = "ingest-batch"
}

variable "render_queue" {
  description = "INGEST_RENDER_QUEUE: one message per image → processor."
  type        = string
  default     = "ingest-render"
}

variable "render_slow_queue" {
  description = "INGEST_RENDER_SLOW_QUEUE: renders that overran the render queue's budget → the processor's slow lane."
  type        = string
  default     = "ingest-render-slow"
}

variable "preview_queue" {
  description = "INGEST_PREVIEW_QUEUE: product ready / safety net → previewer."
  type        = string
  default     = "ingest-preview"
}

variable "index_queue" {
  description = "INGEST_INDEX_QUEUE: product changed → indexer."
  type        = string
  default     = "ingest-index"
}

variable "events_topic" {
  description = "INGEST_EVENTS_TOPIC: SNS topic of the domain events (CloudEvents JSON), published by the batcher's outbox only."
  type        = string
  default     = "ingest-events"
}

variable "event_bus" {
  description = "INGEST_EVENT_BUS: EventBridge bus of the same domain events (\"default\": the account's default bus, not created here)."
  type        = string
  default     = "ingest-events"
}

variable "alarms_topic" {
  description = "INGEST_ALARMS_TOPIC: SNS topic every CloudWatch alarm of ingest notifies (subscribe a person: alarm_email)."
  type        = string
  default     = "ingest-alarms"
}

# --- buckets -----------------------------------------------------------------------------------

variable "versioned_buckets" {
  description = "Bucket roles (keys of topology.json's \"buckets\") with versioning on."
  type        = list(string)
  default     = ["uploads"]
}

variable "noncurrent_version_days" {
  description = "Days an overwritten or deleted object version is kept in a versioned bucket."
  type        = number
  default     = 30
}

# --- network -----------------------------------------------------------------------------------

variable "vpc_id" {
  description = "VPC of the tasks and the database."
  type        = string
}

variable "private_subnet_ids" {
  description = "Subnets of the tasks and the database (private, with a NAT gateway or VPC endpoints for S3, SQS, SNS, EventBridge, ECR, CloudWatch Logs, X-Ray and Secrets Manager)."
  type        = list(string)
}

variable "public_subnet_ids" {
  description = "Subnets of the api's internet-facing load balancer (public: a route to an internet gateway), in at least two availability zones (api.tf)."
  type        = list(string)

  validation {
    condition     = length(var.public_subnet_ids) >= 2
    error_message = "An Application Load Balancer needs subnets in at least two availability zones."
  }
}

variable "assign_public_ip" {
  description = "Give tasks a public IP (only for public subnets without NAT)."
  type        = bool
  default     = false
}

# --- services ----------------------------------------------------------------------------------

variable "image_tag" {
  description = <<-EOT
    Tag (a commit SHA) of the images in the ECR repositories <name>-<service> that the task
    definitions Terraform registers run: the first deployment, and the template of later ones.
    After that the deploy workflow (.github/workflows/deploy.yml) registers a revision per
    commit with its own tag and rolls the services; Terraform leaves their task definition be.
    Never "latest": the repositories' tags are immutable, and a deployment names what it runs.
  EOT
  type        = string

  validation {
    condition     = var.image_tag != "latest" && can(regex("^[0-9A-Za-z_][0-9A-Za-z_.-]{0,127}$", var.image_tag))
    error_message = "image_tag names one build (the commit SHA the workflow tags it with), never \"latest\"."
  }
}

variable "images_kept" {
  description = <<-EOT
    ECR lifecycle (ecr.tf): per repository, how many of the most recent images deployed to this
    environment (tagged deployed-<environment>-...) are kept, and, separately, how many of the
    most recent images never deployed. 3 = the rollback workflow's choice.
  EOT
  type        = number
  default     = 3

  validation {
    condition     = var.images_kept >= 2
    error_message = "Keep at least 2 images: the deployed one and one to roll back to."
  }
}

variable "environment" {
  description = "The deployment environment this stack is (the GitHub environment of the workflows; the deployed-<environment>- tags of ecr.tf)."
  type        = string
  default     = "production"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]*$", var.environment))
    error_message = "environment: lower-case letters, digits and dashes (it goes into image tags)."
  }
}

variable "github_repository" {
  description = "owner/name of the GitHub repository whose workflows deploy here (github.tf): its jobs in GitHub environment var.environment may assume the deploy role through OIDC. Empty: no deploy role."
  type        = string
  default     = ""
}

variable "github_oidc_provider_arn" {
  description = "ARN of the account's existing IAM OIDC provider for token.actions.githubusercontent.com (one per account). Empty: github.tf creates it."
  type        = string
  default     = ""
}

variable "services" {
  description = <<-EOT
    Fargate size and scaling of each service. The task count moves between min_count and
    max_count. A consumer's goes up when its queue's backlog per task exceeds
    backlog_per_task (visible messages / running tasks) or the oldest message is older than
    max_message_age seconds; the api's when a task serves more than requests_per_task
    requests a minute (its ALB's RequestCountPerTarget) or its CPU exceeds cpu_percent.
  EOT
  type = map(object({
    cpu               = number
    memory            = number
    min_count         = number
    max_count         = number
    backlog_per_task  = optional(number)
    max_message_age   = optional(number)
    requests_per_task = optional(number)
    cpu_percent       = optional(number)
  }))
  default = {
    batcher   = { cpu = 1024, memory = 2048, min_count = 1, max_count = 4, backlog_per_task = 20, max_message_age = 120 }
    processor = { cpu = 2048, memory = 4096, min_count = 2, max_count = 20, backlog_per_task = 500, max_message_age = 120 }
    previewer = { cpu = 1024, memory = 2048, min_count = 1, max_count = 4, backlog_per_task = 50, max_message_age = 300 }
    indexer   = { cpu = 512, memory = 1024, min_count = 1, max_count = 4, backlog_per_task = 200, max_message_age = 120 }
    # Two tasks at least: one per availability zone of the ALB.
    api = { cpu = 512, memory = 1024, min_count = 2, max_count = 8, requests_per_task = 1200, cpu_percent = 60 }
  }

  validation {
    condition     = alltrue([for s in ["batcher", "processor", "previewer", "indexer", "api"] : contains(keys(var.services), s)])
    error_message = "services must size batcher, processor, previewer, indexer and api."
  }

  validation {
    condition = alltrue([
      for name, s in var.services : name == "api" ? s.requests_per_task != null && s.cpu_percent != null : s.backlog_per_task != null && s.max_message_age != null
    ])
    error_message = "The consumers need backlog_per_task and max_message_age; the api needs requests_per_task and cpu_percent."
  }

  validation {
    condition     = alltrue([for s in values(var.services) : s.min_count >= 1 && s.max_count >= s.min_count])
    error_message = "Each service needs 1 <= min_count <= max_count."
  }
}

variable "service_environment" {
  description = "Extra environment per service, e.g. { processor = { INGEST_CONCURRENCY = \"8\" } }. Names are INGEST_<FIELD> of the service's settings."
  type        = map(map(string))
  default     = {}
}

variable "log_level" {
  description = "INGEST_LOG_LEVEL of every service."
  type        = string
  default     = "INFO"
}

variable "trace_client_spans" {
  description = "INGEST_TRACE_CLIENT_SPANS of every service: the share of uploads whose traces keep a span per S3, SQS, SNS and SQL call (1 while investigating)."
  type        = number
  default     = 0.1

  validation {
    condition     = var.trace_client_spans >= 0 && var.trace_client_spans <= 1
    error_message = "trace_client_spans is a share, from 0 to 1."
  }
}

variable "log_retention_days" {
  description = "CloudWatch Logs retention."
  type        = number
  default     = 30
}

# --- telemetry: the collector beside each service (collector.tf) -----------------------------

variable "collector_image" {
  description = "The OpenTelemetry collector of every task (ADOT: has the awsxray and awsemf exporters)."
  type        = string
  default     = "public.ecr.aws/aws-observability/aws-otel-collector:v0.43.3"
}

variable "otlp_endpoint" {
  description = <<-EOT
    OTLP/HTTP endpoint of another telemetry backend (e.g. "https://otlp.example.com"). Empty:
    traces go to X-Ray. Set: the collectors send traces there instead of X-Ray, and metrics
    there as well as to CloudWatch (the alarms and the dashboard read CloudWatch).
  EOT
  type        = string
  default     = ""
}

variable "metrics_namespace" {
  description = "CloudWatch namespace of the services' metrics (the collector's awsemf exporter; alarms.tf and dashboard.tf read it)."
  type        = string
  default     = "ingest"
}

# --- the HTTP API behind its load balancer (api.tf) ----------------------------------------

variable "api_certificate_arn" {
  description = "ARN of the ACM certificate (same region) of the API's HTTPS listener: for api_domain, or whatever name clients use."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:acm:[a-z0-9-]+:[0-9]{12}:certificate/", var.api_certificate_arn))
    error_message = "api_certificate_arn is an ACM certificate ARN (arn:aws:acm:<region>:<account>:certificate/...)."
  }
}

variable "api_domain" {
  description = "The API's host name (e.g. \"api.example.com\"; point a DNS alias at the ALB: output api_load_balancer). Empty: the ALB's own DNS name. The default CORS origin of the uploads bucket is https://<this>."
  type        = string
  default     = ""
}

variable "api_allowed_cidrs" {
  description = "IPv4 ranges that may reach the API's load balancer (ports 443, and 80 which redirects to 443)."
  type        = list(string)
  default     = ["0.0.0.0/0"]
}

variable "api_cors_origins" {
  description = "INGEST_API_CORS_ORIGINS: browser origins that may POST upload forms to the uploads bucket (its CORS rule, from topology.json). Empty: the API's own origin (https://<api_domain>, else the ALB's name), which serves the contributor page; [\"*\"]: any page."
  type        = list(string)
  default     = []
}

variable "public_base_url" {
  description = "INGEST_PUBLIC_BASE_URL of the api: where renditions and mosaics are served, e.g. a CloudFront distribution of the previews bucket (\"https://cdn.example.com\"). Empty: the previews bucket's own S3 URL."
  type        = string
  default     = ""

  validation {
    condition     = var.public_base_url == "" || can(regex("^https?://[^/]+", var.public_base_url))
    error_message = "public_base_url is an absolute http(s) URL, or empty."
  }
}

variable "api_5xx_rate_alarm_threshold" {
  description = "A person is told when this fraction of the API's requests is answered 5xx (by its tasks or its load balancer) in 3 of 5 periods of 5 minutes; a deployment during which it fires is rolled back."
  type        = number
  default     = 0.05

  validation {
    condition     = var.api_5xx_rate_alarm_threshold > 0 && var.api_5xx_rate_alarm_threshold < 1
    error_message = "api_5xx_rate_alarm_threshold is a fraction: 0 < threshold < 1."
  }
}

variable "api_response_time_alarm_seconds" {
  description = "A person is told when the API's p99 response time (TargetResponseTime: an event stream counts until its first byte) exceeds this in 3 of 5 periods of 5 minutes."
  type        = number
  default     = 2
}

# --- alarms (alarms.tf) --------------------------------------------------------------------

variable "alarm_email" {
  description = "E-mail address subscribed to the alarms topic (SNS sends a confirmation mail first); empty: no subscription."
  type        = string
  default     = ""
}

variable "message_age_alarm_seconds" {
  description = <<-EOT
    A person is told when the oldest message of a queue has waited this long for 5 minutes
    (ApproximateAgeOfOldestMessage). Keep it well above the services' max_message_age, at
    which autoscaling adds tasks first.
  EOT
  type        = number
  default     = 900
}

variable "error_rate_alarm_threshold" {
  description = "A person is told when this fraction of a service's messages ends failed or invalid (sent to the DLQ) for 3 of 5 periods of 5 minutes."
  type        = number
  default     = 0.05

  validation {
    condition     = var.error_rate_alarm_threshold > 0 && var.error_rate_alarm_threshold < 1
    error_message = "error_rate_alarm_threshold is a fraction: 0 < threshold < 1."
  }
}

variable "outbox_lag_alarm_seconds" {
  description = "A person is told when a domain event has waited this long to be published, for 5 minutes."
  type        = number
  default     = 300
}

# --- database ----------------------------------------------------------------------------------

variable "db_instance_class" {
  description = "RDS instance class (placeholder size)."
  type        = string
  default     = "db.t4g.medium"
}

variable "db_allocated_storage" {
  description = "Initial storage in GiB; autoscaling up to 5x."
  type        = number
  default     = 20
}

variable "db_multi_az" {
  description = "Standby in a second AZ."
  type        = bool
  default     = false
}

variable "db_password_version" {
  description = "Raise it to give the database a new password (rds.tf); the DSN secret follows in the same run. Replace the running tasks afterwards."
  type        = number
  default     = 1
}

variable "db_deletion_protection" {
  description = "Refuse to delete the database (turn off only to tear down a test environment)."
  type        = bool
  default     = true
}
