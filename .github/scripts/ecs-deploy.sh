#!/usr/bin/env bash
# The steps of .github/workflows/deploy.yml and rollback.yml, with the AWS CLI and jq (both on
# GitHub's ubuntu runners), credentials from aws-actions/configure-aws-credentials (OIDC).
#
#   ecs-deploy.sh build IMAGE                 build IMAGE (a service, or cli) once, push it as
#                                             <registry>/<name>-IMAGE:<commit SHA>
#   ecs-deploy.sh migrate                     run `ingest migrate` (the CLI task definition with
#                                             the commit's image) and fail unless it exits 0
#   ecs-deploy.sh roll SERVICE                roll SERVICE to the commit's image, wait until the
#                                             deployment completed (or fail when ECS rolled back)
#   ecs-deploy.sh kept SERVICE                the tags rollback may pick (see deploy/README.md)
#   ecs-deploy.sh rollback SERVICE TAG|previous
#
# Environment (GitHub environment variables, see `terraform output github_environment_variables`):
#   NAME_PREFIX, ECS_CLUSTER, CLI_SUBNETS, CLI_SECURITY_GROUP, CLI_ASSIGN_PUBLIC_IP,
#   DEPLOY_ENVIRONMENT (staging|production), IMAGE_TAG (the commit SHA), GITHUB_RUN_ID,
#   GITHUB_RUN_ATTEMPT; optional IMAGES_KEPT (3, as var.images_kept), ROLL_TIMEOUT (2400 s),
#   MIGRATE_TIMEOUT (3600 s).
set -euo pipefail

IMAGES_KEPT="${IMAGES_KEPT:-3}"
ROLL_TIMEOUT="${ROLL_TIMEOUT:-2400}"
MIGRATE_TIMEOUT="${MIGRATE_TIMEOUT:-3600}"
POLL=15

die() {
  echo "::error::$*" >&2
  exit 1
}

need() {
  local name
  for name in "$@"; do
    [ -n "${!name:-}" ] || die "$name is not set (a variable of the GitHub environment?)"
  done
}

registry() {
  local account region
  account="$(aws sts get-caller-identity --query Account --output text)"
  region="${AWS_REGION:?}"
  echo "${account}.dkr.ecr.${region}.amazonaws.com"
}

repository() { echo "${NAME_PREFIX}-$1"; }

# The tag that records that an image ran in this environment: ecr.tf's lifecycle policy keeps
# the most recent images that carry one. New per deployment, as the tags are immutable.
deployed_tag() { echo "deployed-${DEPLOY_ENVIRONMENT}-${GITHUB_RUN_ID}-${GITHUB_RUN_ATTEMPT:-1}"; }

image_exists() {
  aws ecr describe-images --repository-name "$1" --image-ids "imageTag=$2" >/dev/null 2>&1
}

# Add the deployed-<environment>- tag to REPOSITORY:TAG (same manifest, one more tag).
mark_deployed() {
  local repo="$1" tag="$2" new manifest media
  new="$(deployed_tag)"
  if image_exists "$repo" "$new"; then
    return 0 # a re-run of the same attempt
  fi
  manifest="$(aws ecr batch-get-image --repository-name "$repo" --image-ids "imageTag=$tag" \
    --query 'images[0].imageManifest' --output text)"
  media="$(aws ecr batch-get-image --repository-name "$repo" --image-ids "imageTag=$tag" \
    --query 'images[0].imageManifestMediaType' --output text)"
  aws ecr put-image --repository-name "$repo" --image-tag "$new" \
    --image-manifest "$manifest" --image-manifest-media-type "$media" >/dev/null
  echo "tagged ${repo}:${tag} as ${new}"
}

# Register a revision of task definition FROM (a family: its latest revision; or an ARN) with
# CONTAINER's image replaced by IMAGE; print the new revision's ARN.
register() {
  local from="$1" container="$2" image="$3" spec
  spec="$(mktemp)"
  aws ecs describe-task-definition --task-definition "$from" --query taskDefinition --output json |
    jq --arg name "$container" --arg image "$image" '
      if ([.containerDefinitions[] | select(.name == $name)] | length) != 1
      then error("no container \($name) in \(.family)") else . end
      | .containerDefinitions |= map(if .name == $name then .image = $image else . end)
      | del(.taskDefinitionArn, .revision, .status, .requiresAttributes, .compatibilities,
            .registeredAt, .registeredBy, .deregisteredAt)' >"$spec"
  aws ecs register-task-definition --cli-input-json "file://${spec}" \
    --query taskDefinition.taskDefinitionArn --output text
  rm -f "$spec"
}

cmd_build() {
  local image="$1" repo uri target
  need NAME_PREFIX IMAGE_TAG
  repo="$(repository "$image")"
  uri="$(registry)/${repo}:${IMAGE_TAG}"
  if image_exists "$repo" "$IMAGE_TAG"; then
    echo "${uri} exists (tags are immutable): not built again"
    return 0
  fi
  if [ "$image" = cli ]; then
    target=(--target cli --build-arg COMMAND=ingest)
  else
    target=(--target service)
  fi
  aws ecr get-login-password | docker login --username AWS --password-stdin "$(registry)"
  docker build --file deploy/docker/Dockerfile --build-arg "SERVICE=${image}" "${target[@]}" \
    --label "org.opencontainers.image.revision=${IMAGE_TAG}" --tag "$uri" .
  docker push "$uri"
  docker logout "$(registry)"
}

cmd_migrate() {
  local repo image taskdef network task status exit_code reason deadline stream
  need NAME_PREFIX ECS_CLUSTER CLI_SUBNETS CLI_SECURITY_GROUP IMAGE_TAG DEPLOY_ENVIRONMENT GITHUB_RUN_ID
  repo="$(repository cli)"
  image="$(registry)/${repo}:${IMAGE_TAG}"
  taskdef="$(register "${NAME_PREFIX}-cli" cli "$image")"
  echo "migrate with ${taskdef}"
  network="awsvpcConfiguration={subnets=[${CLI_SUBNETS}],securityGroups=[${CLI_SECURITY_GROUP}],assignPublicIp=${CLI_ASSIGN_PUBLIC_IP:-DISABLED}}"
  task="$(aws ecs run-task --cluster "$ECS_CLUSTER" --launch-type FARGATE --count 1 \
    --task-definition "$taskdef" --network-configuration "$network" \
    --started-by "deploy-${GITHUB_RUN_ID}" \
    --overrides '{"containerOverrides":[{"name":"cli","command":["migrate"]}]}' \
    --query 'tasks[0].taskArn' --output text)"
  [ -n "$task" ] && [ "$task" != None ] || die "ecs run-task started no task"
  echo "task ${task}"
  deadline=$((SECONDS + MIGRATE_TIMEOUT))
  while :; do
    status="$(aws ecs describe-tasks --cluster "$ECS_CLUSTER" --tasks "$task" \
      --query 'tasks[0].lastStatus' --output text)"
    [ "$status" = STOPPED ] && break
    [ "$SECONDS" -lt "$deadline" ] || die "migrate still ${status} after ${MIGRATE_TIMEOUT} s (task ${task})"
    sleep "$POLL"
  done
  exit_code="$(aws ecs describe-tasks --cluster "$ECS_CLUSTER" --tasks "$task" \
    --query "tasks[0].containers[?name=='cli'] | [0].exitCode" --output text)"
  reason="$(aws ecs describe-tasks --cluster "$ECS_CLUSTER" --tasks "$task" \
    --query 'tasks[0].stoppedReason' --output text)"
  # Its output (the awslogs stream <prefix>/<container>/<task id>), best effort.
  stream="cli/cli/${task##*/}"
  aws logs get-log-events --log-group-name "/ecs/${NAME_PREFIX}/cli" --log-stream-name "$stream" \
    --start-from-head --query 'events[].message' --output text 2>/dev/null | tr '\t' '\n' || true
  [ "$exit_code" = 0 ] || die "ingest migrate exited ${exit_code} (${reason}): no service is rolled"
  mark_deployed "$repo" "$IMAGE_TAG"
}

# Point SERVICE at TASKDEF and wait for ECS's verdict on that deployment: COMPLETED (the new
# tasks reached a steady state and no alarm fired during the bake time), or FAILED (the circuit
# breaker or an alarm rolled it back).
roll_to() {
  local service="$1" taskdef="$2" deadline state primary reason
  aws ecs update-service --cluster "$ECS_CLUSTER" --service "$service" \
    --task-definition "$taskdef" --query 'service.deployments[0].id' --output text
  deadline=$((SECONDS + ROLL_TIMEOUT))
  while :; do
    sleep "$POLL"
    state="$(aws ecs describe-services --cluster "$ECS_CLUSTER" --services "$service" --output json |
      jq -r --arg td "$taskdef" '
        .services[0].deployments as $d
        | ($d | map(select(.taskDefinition == $td)) | .[0]) as $mine
        | ($d | map(select(.status == "PRIMARY")) | .[0].taskDefinition) as $primary
        | if $mine == null then "GONE \($primary)"
          else "\($mine.rolloutState) \($primary) \($mine.rolloutStateReason // "")" end')"
    read -r state primary reason <<<"$state"
    echo "${service}: ${state} ${reason}"
    case "$state" in
      COMPLETED) [ "$primary" = "$taskdef" ] && return 0 ;;
      FAILED | GONE) die "${service}: the deployment of ${taskdef} failed and was rolled back to ${primary}: ${reason}" ;;
    esac
    [ "$SECONDS" -lt "$deadline" ] || die "${service}: no steady state after ${ROLL_TIMEOUT} s"
  done
}

cmd_roll() {
  local service="$1" repo image taskdef
  need NAME_PREFIX ECS_CLUSTER IMAGE_TAG DEPLOY_ENVIRONMENT GITHUB_RUN_ID
  repo="$(repository "$service")"
  image="$(registry)/${repo}:${IMAGE_TAG}"
  # From the family's latest revision: what Terraform last registered, or the last deployment.
  taskdef="$(register "${NAME_PREFIX}-${service}" "$service" "$image")"
  echo "${service} → ${taskdef}"
  roll_to "$service" "$taskdef"
  mark_deployed "$repo" "$IMAGE_TAG"
}

# The commit tags of the IMAGES_KEPT most recently pushed images that ran here: the images
# ecr.tf's lifecycle rule 1 keeps, newest first.
cmd_kept() {
  local service="$1"
  need NAME_PREFIX DEPLOY_ENVIRONMENT
  aws ecr describe-images --repository-name "$(repository "$service")" \
    --filter tagStatus=TAGGED --output json |
    jq -r --arg prefix "deployed-${DEPLOY_ENVIRONMENT}-" --argjson n "$IMAGES_KEPT" '
      [.imageDetails[] | select(any(.imageTags[]; startswith($prefix)))]
      | sort_by(.imagePushedAt) | reverse | .[:$n][]
      | [.imageTags[] | select(startswith("deployed-") | not)][0] // empty'
}

cmd_rollback() {
  local service="$1" wanted="$2" current image repo_url kept tag taskdef
  need NAME_PREFIX ECS_CLUSTER DEPLOY_ENVIRONMENT GITHUB_RUN_ID
  current="$(aws ecs describe-services --cluster "$ECS_CLUSTER" --services "$service" \
    --query 'services[0].taskDefinition' --output text)"
  image="$(aws ecs describe-task-definition --task-definition "$current" --output json |
    jq -r --arg name "$service" '.taskDefinition.containerDefinitions[] | select(.name == $name) | .image')"
  repo_url="${image%:*}"
  mapfile -t kept < <(cmd_kept "$service")
  echo "${service} runs ${image##*:}; kept images (newest first): ${kept[*]:-none}"
  if [ "$wanted" = previous ]; then
    tag=""
    for candidate in "${kept[@]}"; do
      if [ "$candidate" != "${image##*:}" ]; then
        tag="$candidate"
        break
      fi
    done
    [ -n "$tag" ] || die "no kept image of ${service} other than the one running"
  else
    tag=""
    for candidate in "${kept[@]}"; do
      [ "$candidate" = "$wanted" ] && tag="$wanted"
    done
    [ -n "$tag" ] || die "${wanted} is not one of the ${IMAGES_KEPT} images kept for ${DEPLOY_ENVIRONMENT}: ${kept[*]:-none}"
  fi
  # From the running task definition: only the image changes.
  taskdef="$(register "$current" "$service" "${repo_url}:${tag}")"
  echo "${service}: ${image##*:} → ${tag} (${taskdef})"
  roll_to "$service" "$taskdef"
  mark_deployed "$(repository "$service")" "$tag"
}

command="${1:-}"
shift || true
case "$command" in
  build | roll | kept)
    [ $# -eq 1 ] || die "usage: $0 ${command} NAME"
    "cmd_${command}" "$1"
    ;;
  migrate)
    [ $# -eq 0 ] || die "usage: $0 migrate"
    cmd_migrate
    ;;
  rollback)
    [ $# -eq 2 ] || die "usage: $0 rollback SERVICE TAG|previous"
    cmd_rollback "$1" "$2"
    ;;
  *) die "usage: $0 build|migrate|roll|kept|rollback ..." ;;
esac
