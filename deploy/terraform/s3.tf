# One private bucket per entry of topology.json's "buckets", its lifecycle rules, its CORS
# rules and its S3 → SQS notifications.
#
# Public access is blocked on every bucket. Serving previews to browsers (CloudFront with an
# origin access control on the previews bucket) is out of scope here: add the distribution
# and a bucket policy for its OAC, and keep the public access block on.

resource "aws_s3_bucket" "bucket" {
  for_each = local.buckets

  bucket = each.value.name
  tags   = { role = each.key }
}

resource "aws_s3_bucket_public_access_block" "bucket" {
  for_each = local.buckets

  bucket                  = aws_s3_bucket.bucket[each.key].id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "bucket" {
  for_each = local.buckets

  bucket = aws_s3_bucket.bucket[each.key].id
  rule {
    object_ownership = "BucketOwnerEnforced" # ACLs off: access is IAM only
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "bucket" {
  for_each = local.buckets

  bucket = aws_s3_bucket.bucket[each.key].id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256" # SSE-S3: no KMS grants in the task roles
    }
  }
}

# Uploads are versioned: a contributor re-uploading the same key keeps the earlier ZIP
# (the batcher keys its idempotency on object + ETag).
resource "aws_s3_bucket_versioning" "bucket" {
  for_each = { for role, b in local.buckets : role => b if contains(var.versioned_buckets, role) }

  bucket = aws_s3_bucket.bucket[each.key].id
  versioning_configuration {
    status = "Enabled"
  }
}

# Per bucket, the lifecycle rules of topology.json (expire rejected uploads, abort stale
# multipart uploads) plus, when versioned, the expiry of noncurrent versions. S3 keeps one
# lifecycle configuration per bucket, so every rule of a bucket goes into one resource.
locals {
  bucket_lifecycle = {
    for role, rules in local.lifecycle_rules : role => concat(rules, [
      for versioned in [contains(var.versioned_buckets, role)] : {
        id                              = "expire-noncurrent-versions"
        prefix                          = ""
        tags                            = {}
        expiration_days                 = null
        abort_incomplete_multipart_days = null
        noncurrent_days                 = var.noncurrent_version_days
      } if versioned
    ])
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "bucket" {
  for_each = { for role, rules in local.bucket_lifecycle : role => rules if length(rules) > 0 }

  bucket = aws_s3_bucket.bucket[each.key].id

  dynamic "rule" {
    for_each = each.value
    content {
      id     = rule.value.id
      status = "Enabled"

      # S3's filter: a prefix alone (none: the whole bucket), or a prefix and tags under `and`.
      filter {
        prefix = length(rule.value.tags) == 0 && rule.value.prefix != "" ? rule.value.prefix : null

        dynamic "and" {
          for_each = length(rule.value.tags) > 0 ? [rule.value] : []
          content {
            prefix = and.value.prefix
            tags   = and.value.tags
          }
        }
      }

      dynamic "expiration" {
        for_each = rule.value.expiration_days == null ? [] : [rule.value.expiration_days]
        content {
          days = expiration.value
        }
      }

      dynamic "abort_incomplete_multipart_upload" {
        for_each = rule.value.abort_incomplete_multipart_days == null ? [] : [rule.value.abort_incomplete_multipart_days]
        content {
          days_after_initiation = abort_incomplete_multipart_upload.value
        }
      }

      dynamic "noncurrent_version_expiration" {
        for_each = rule.value.noncurrent_days == null ? [] : [rule.value.noncurrent_days]
        content {
          noncurrent_days = noncurrent_version_expiration.value
        }
      }
    }
  }

  depends_on = [aws_s3_bucket_versioning.bucket]
}

# The buckets' CORS rules of topology.json: browsers send the API's upload forms (presigned
# POST, api.tf) straight to the uploads bucket. CORS only lets a page read S3's answer; the
# signed form, not the origin, is what authorises the upload.
resource "aws_s3_bucket_cors_configuration" "bucket" {
  for_each = { for role, rules in local.cors_rules : role => rules if length(rules) > 0 }

  bucket = aws_s3_bucket.bucket[each.key].id

  dynamic "cors_rule" {
    for_each = each.value
    content {
      id              = cors_rule.value.id
      allowed_origins = cors_rule.value.origins
      allowed_methods = cors_rule.value.methods
      allowed_headers = cors_rule.value.headers
      expose_headers  = cors_rule.value.expose_headers
      max_age_seconds = cors_rule.value.max_age_seconds
    }
  }
}

# S3 checks that it may send to each queue when the configuration is put: the queue
# policy must exist first.
resource "aws_s3_bucket_notification" "bucket" {
  for_each = { for role in distinct([for n in local.notifications : n.bucket]) : role => role }

  bucket = aws_s3_bucket.bucket[each.key].id

  dynamic "queue" {
    for_each = [for n in local.notifications : n if n.bucket == each.key]
    content {
      id            = queue.value.id
      queue_arn     = aws_sqs_queue.queue[queue.value.queue].arn
      events        = queue.value.events
      filter_prefix = queue.value.prefix == "" ? null : queue.value.prefix
      filter_suffix = queue.value.suffix == "" ? null : queue.value.suffix
    }
  }

  depends_on = [aws_sqs_queue_policy.s3_events]
}
