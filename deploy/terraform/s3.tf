# One private bucket per entry of topology.json's "buckets", and its S3 → SQS notifications.
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

resource "aws_s3_bucket_lifecycle_configuration" "bucket" {
  for_each = { for role, b in local.buckets : role => b if contains(var.versioned_buckets, role) }

  bucket = aws_s3_bucket.bucket[each.key].id

  rule {
    id     = "expire-noncurrent-versions"
    status = "Enabled"
    filter {}
    noncurrent_version_expiration {
      noncurrent_days = var.noncurrent_version_days
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }

  depends_on = [aws_s3_bucket_versioning.bucket]
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
