# Optional: finalized objects of an existing data bucket (under a prefix) announced on the trigger topic as Cloud
# Storage notifications, which on_message_published reads as trigger files. Storage triggers cannot filter on
# object names; a notification can.
resource "google_storage_notification" "data" {
  count = local.notify ? 1 : 0

  bucket             = var.notify_bucket
  topic              = google_pubsub_topic.triggers.id
  payload_format     = "JSON_API_V1"
  event_types        = ["OBJECT_FINALIZE"]
  object_name_prefix = var.notify_prefix != "" ? var.notify_prefix : null

  depends_on = [google_pubsub_topic_iam_member.gcs_agent_triggers]
}
