# The three 2nd-gen functions, built from functions/ (main.py, requirements.txt and the relay package at the top of
# the upload, as Cloud Functions requires), their invoker bindings and the dead-letter step.

locals {
  source_dir = var.functions_source_dir != "" ? var.functions_source_dir : "${path.module}/../../functions"
  # What Cloud Functions needs: functions/ minus what Python leaves behind (infra/deploy.sh stages the same).
  source_files = sort([
    for name in fileset(local.source_dir, "**") : name
    if !strcontains(name, "__pycache__") && !strcontains(name, ".egg-info")
  ])
  # Named by content, so the functions are rebuilt when, and only when, the code changes.
  source_hash = substr(sha256(join("\n", [
    for name in local.source_files : "${name} ${filesha256("${local.source_dir}/${name}")}"
  ])), 0, 16)

  build_service_account = var.build_service_account != "" ? "projects/${var.project_id}/serviceAccounts/${var.build_service_account}" : null
}

data "archive_file" "functions" {
  type        = "zip"
  output_path = "${path.root}/build/relay-functions-${local.source_hash}.zip"

  dynamic "source" {
    for_each = local.source_files
    content {
      content  = file("${local.source_dir}/${source.value}")
      filename = source.value
    }
  }
}

resource "google_storage_bucket_object" "functions_source" {
  bucket = google_storage_bucket.sources.name
  name   = "functions-${local.source_hash}.zip"
  source = data.archive_file.functions.output_path
}

locals {
  # The functions differ only in their entry point and their event: one resource serves them all.
  functions = {
    on_object_finalized = {
      name         = local.object_function
      description  = "Relay: a trigger file finalized in the trigger bucket becomes one pipeline run."
      event_type   = "google.cloud.storage.object.v1.finalized"
      pubsub_topic = null
      buckets      = [google_storage_bucket.triggers.name]
    }
    on_message_published = {
      name         = local.message_function
      description  = "Relay: a message on the trigger topic (a trigger, a storage notification or a URI) becomes one pipeline run."
      event_type   = "google.cloud.pubsub.topic.v1.messagePublished"
      pubsub_topic = google_pubsub_topic.triggers.id
      buckets      = []
    }
    on_schedule = {
      name         = local.schedule_function
      description  = "Relay: on each Cloud Scheduler tick, launched runs' records are brought to their backend's state."
      event_type   = "google.cloud.pubsub.topic.v1.messagePublished"
      pubsub_topic = google_pubsub_topic.reconcile.id
      buckets      = []
    }
    on_run_ended = {
      name         = local.ended_function
      description  = "Relay: a run's end on the notify topic frees its slots and launches the next queued runs at once."
      event_type   = "google.cloud.pubsub.topic.v1.messagePublished"
      pubsub_topic = google_pubsub_topic.notifications.id
      buckets      = []
    }
  }
}

resource "google_cloudfunctions2_function" "relay" {
  for_each = local.functions

  name        = each.value.name
  project     = var.project_id
  location    = var.region
  description = each.value.description
  labels      = local.labels

  build_config {
    runtime         = var.runtime
    entry_point     = each.key
    service_account = local.build_service_account
    source {
      storage_source {
        bucket = google_storage_bucket.sources.name
        object = google_storage_bucket_object.functions_source.name
      }
    }
  }

  service_config {
    available_memory                 = var.memory
    available_cpu                    = var.cpu
    max_instance_request_concurrency = var.concurrency
    max_instance_count               = var.max_instances
    timeout_seconds                  = var.timeout_seconds
    ingress_settings                 = "ALLOW_INTERNAL_ONLY"
    all_traffic_on_latest_revision   = true
    service_account_email            = google_service_account.functions.email
    environment_variables            = local.function_env

    dynamic "secret_environment_variables" {
      for_each = var.function_secrets
      content {
        key        = secret_environment_variables.key
        project_id = var.project_id
        secret     = secret_environment_variables.value.secret
        version    = secret_environment_variables.value.version
      }
    }
  }

  event_trigger {
    trigger_region        = var.region
    event_type            = each.value.event_type
    pubsub_topic          = each.value.pubsub_topic
    retry_policy          = "RETRY_POLICY_RETRY"
    service_account_email = google_service_account.trigger.email

    dynamic "event_filters" {
      for_each = each.value.buckets
      content {
        attribute = "bucket"
        value     = event_filters.value
      }
    }
  }

  depends_on = [
    google_project_iam_member.trigger_event_receiver,
    google_project_iam_member.gcs_agent_publisher,
    google_secret_manager_secret_iam_member.functions,
  ]
}

# Eventarc pushes to the functions' Cloud Run services as the trigger account: invoker on these four only.
resource "google_cloud_run_v2_service_iam_member" "trigger_invokes" {
  for_each = google_cloudfunctions2_function.relay

  project  = var.project_id
  location = var.region
  name     = each.value.service_config[0].service
  role     = "roles/run.invoker"
  member   = google_service_account.trigger.member
}

# Eventarc creates each trigger's push subscription itself and Terraform cannot manage it, so the dead-letter
# policy is set on it by the same code the gcloud path runs, again whenever a trigger is replaced.
resource "terraform_data" "dead_letter" {
  count = var.configure_dead_letter ? 1 : 0

  triggers_replace = [
    google_cloudfunctions2_function.relay["on_object_finalized"].event_trigger[0].trigger,
    google_cloudfunctions2_function.relay["on_message_published"].event_trigger[0].trigger,
    google_pubsub_topic.dead_letter.id,
    var.max_delivery_attempts,
  ]

  provisioner "local-exec" {
    command = "bash ${path.module}/../deploy.sh --dead-letter-only"
    environment = {
      GOOGLE_CLOUD_PROJECT         = var.project_id
      GOOGLE_CLOUD_REGION          = var.region
      DEPLOY_PREFIX                = var.prefix
      DEPLOY_MAX_DELIVERY_ATTEMPTS = var.max_delivery_attempts
      DEPLOY_PROJECT_NUMBER        = data.google_project.this.number
    }
  }

  depends_on = [google_pubsub_topic_iam_member.pubsub_agent_dead_letter]
}
