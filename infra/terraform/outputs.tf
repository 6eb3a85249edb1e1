output "triggers_bucket" {
  description = "Drop trigger files (*.json, *.yaml) here."
  value       = google_storage_bucket.triggers.name
}

output "results_bucket" {
  description = "Run records (runs/, rejected/, ratchet/)."
  value       = google_storage_bucket.results.name
}

output "audit_bucket" {
  description = "The audit trail (RELAY_AUDIT_URI): relay audit verify --audit gs://BUCKET proves it."
  value       = google_storage_bucket.audit.name
}

output "pipeline_root_bucket" {
  description = "Vertex AI Pipelines' root (RELAY_VERTEX_PIPELINE_ROOT)."
  value       = google_storage_bucket.pipeline_root.name
}

output "triggers_topic" {
  description = "Publish trigger documents, trigger_uri messages or storage notifications here."
  value       = google_pubsub_topic.triggers.id
}

output "notifications_topic" {
  description = "Every record is published here (RELAY_NOTIFY_TOPIC)."
  value       = google_pubsub_topic.notifications.id
}

output "dead_letter_subscription" {
  description = "Events that could not be delivered after max_delivery_attempts."
  value       = google_pubsub_subscription.dead_letter.id
}

output "service_accounts" {
  description = "The functions' runtime, the Eventarc trigger and the pipeline steps' accounts."
  value = {
    functions = google_service_account.functions.email
    trigger   = google_service_account.trigger.email
    pipelines = google_service_account.pipelines.email
  }
}

output "functions" {
  description = "The four functions' names."
  value = {
    on_object_finalized  = google_cloudfunctions2_function.relay["on_object_finalized"].name
    on_message_published = google_cloudfunctions2_function.relay["on_message_published"].name
    on_schedule          = google_cloudfunctions2_function.relay["on_schedule"].name
    on_run_ended         = google_cloudfunctions2_function.relay["on_run_ended"].name
  }
}

output "catalog_bucket" {
  description = "The published catalogs and policies, one folder per version; only the deployer writes here."
  value       = google_storage_bucket.catalog.name
}

output "catalog_uri" {
  description = "RELAY_CATALOG_URI: the versioned prefix the functions read the catalog from."
  value       = local.catalog_uri
}

output "policy_uri" {
  description = "RELAY_POLICY_URI: the policy the functions and the pipeline steps enforce."
  value       = local.policy_uri
}

output "steps_image_repository" {
  description = "Push the steps image here (REGION-docker.pkg.dev/PROJECT/PREFIX/steps:TAG) and compile the catalog with it."
  value       = "${var.region}-docker.pkg.dev/${var.project_id}/${google_artifact_registry_repository.steps.repository_id}"
}

output "next_steps" {
  description = "The grants the policy implies on buckets that are not Relay's, the exports that point relay at this deployment, and the first commands to try (relay preflight --next-steps)."
  value       = data.external.preflight.result.next_steps
}
