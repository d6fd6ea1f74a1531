# PostgreSQL 15 (placeholder size: see variables). The services read one DSN, DATABASE_URL,
# which ECS injects from the Secrets Manager secret below (the execution role reads it).
#
# The password never reaches the Terraform state: Secrets Manager generates it (an ephemeral
# resource, opened again on every run and never stored), and it is handed to RDS and to the
# DSN secret through write-only arguments, which Terraform sends only when their *_version
# changes. One run sets both from the same value; later runs send neither. To change the
# password, raise var.db_password_version and apply, then replace the running tasks (they
# read DATABASE_URL when they start): see deploy/README.md, "Database password".
# (RDS-managed credentials, manage_master_user_password, rotate every 7 days by default:
# tasks that read the password once at start would fail to reconnect after a rotation.)

ephemeral "aws_secretsmanager_random_password" "db" {
  password_length     = 32
  exclude_punctuation = true # the password goes into a URL
}

resource "aws_db_subnet_group" "db" {
  name       = "${var.name}-db"
  subnet_ids = var.private_subnet_ids
}

resource "aws_security_group" "db" {
  name        = "${var.name}-db"
  description = "ingest PostgreSQL: from the ingest tasks only"
  vpc_id      = var.vpc_id

  ingress {
    description     = "PostgreSQL from ingest tasks"
    from_port       = 5432
    to_port         = 5432
    protocol        = "tcp"
    security_groups = [aws_security_group.tasks.id]
  }
}

resource "aws_db_instance" "db" {
  identifier     = "${var.name}-db"
  engine         = "postgres"
  engine_version = "15"
  instance_class = var.db_instance_class

  allocated_storage     = var.db_allocated_storage
  max_allocated_storage = var.db_allocated_storage * 5
  storage_type          = "gp3"
  storage_encrypted     = true

  db_name             = "ingest"
  username            = "ingest"
  password_wo         = ephemeral.aws_secretsmanager_random_password.db.random_password
  password_wo_version = var.db_password_version
  port                = 5432

  db_subnet_group_name   = aws_db_subnet_group.db.name
  vpc_security_group_ids = [aws_security_group.db.id]
  publicly_accessible    = false
  multi_az               = var.db_multi_az

  backup_retention_period    = 7
  auto_minor_version_upgrade = true
  deletion_protection        = var.db_deletion_protection
  skip_final_snapshot        = false
  final_snapshot_identifier  = "${var.name}-db-final"
}

resource "aws_secretsmanager_secret" "database_url" {
  name        = "${var.name}/database-url"
  description = "DATABASE_URL of the ingest services (PostgreSQL DSN)"
}

resource "aws_secretsmanager_secret_version" "database_url" {
  secret_id = aws_secretsmanager_secret.database_url.id
  # The DSN with the password RDS was given in the same run (same ephemeral value).
  secret_string_wo         = "postgresql://${aws_db_instance.db.username}:${ephemeral.aws_secretsmanager_random_password.db.random_password}@${aws_db_instance.db.address}:${aws_db_instance.db.port}/${aws_db_instance.db.db_name}?sslmode=require"
  secret_string_wo_version = var.db_password_version
}
