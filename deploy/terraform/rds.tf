# PostgreSQL 15 (placeholder size: see variables). The services read one DSN, DATABASE_URL,
# which ECS injects from Secrets Manager; the password is generated here, so it is in the
# Terraform state: keep the state encrypted, or replace this with RDS-managed credentials
# (manage_master_user_password) and a DSN secret written by your rotation tooling.

resource "random_password" "db" {
  length  = 32
  special = false # the password goes into a URL
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

  db_name  = "ingest"
  username = "ingest"
  password = random_password.db.result
  port     = 5432

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
  secret_id     = aws_secretsmanager_secret.database_url.id
  secret_string = "postgresql://${aws_db_instance.db.username}:${random_password.db.result}@${aws_db_instance.db.address}:${aws_db_instance.db.port}/${aws_db_instance.db.db_name}?sslmode=require"
}
