# The preflight (relaycli/preflight.py, as infra/deploy.sh runs it before its first gcloud call): read while
# Terraform plans, from inputs known before anything exists, so a problem fails the plan with every problem listed
# and nothing is created. Its warnings show in the plan (the check below); what to do next is an output.

locals {
  repository = "${path.module}/../.."
  # The functions' settings as function_env will hold them, from the variables alone: function_env names resources
  # whose ids are known only once they exist, which would put the preflight off until apply (tests/infra keeps the
  # two equal).
  planned_base = {
    RELAY_BACKEND      = var.backend
    RELAY_RESULTS_URI  = "gs://${var.project_id}-${var.prefix}-results"
    RELAY_CATALOG_URI  = "gs://${var.project_id}-${var.prefix}-catalog/${var.catalog_version}"
    RELAY_POLICY_URI   = "gs://${var.project_id}-${var.prefix}-catalog/${var.catalog_version}/policy.yaml"
    RELAY_NOTIFY_TOPIC = "projects/${var.project_id}/topics/${var.prefix}-notifications"
    RELAY_AUDIT_URI    = "gs://${var.project_id}-${var.prefix}-audit"
  }
  planned_vertex = {
    RELAY_VERTEX_PROJECT         = var.project_id
    RELAY_VERTEX_LOCATION        = var.region
    RELAY_VERTEX_PIPELINE_ROOT   = "gs://${var.project_id}-${var.prefix}-pipeline-root"
    RELAY_VERTEX_SERVICE_ACCOUNT = "${var.prefix}-pipelines@${var.project_id}.iam.gserviceaccount.com"
  }
  planned_env = merge(local.planned_base, local.vertex ? local.planned_vertex : {}, var.relay_settings)
}

data "external" "preflight" {
  program = concat(
    [
      "env", "PYTHONPATH=${local.repository}:${local.repository}/functions", var.preflight_python,
      "-m", "relaycli.preflight", "--terraform",
      "--policy=${var.policy_file}",
      "--catalog-dir=${var.catalog_dir}",
      "--trigger-bucket=${var.project_id}-${var.prefix}-triggers",
      "--trigger-topic=projects/${var.project_id}/topics/${var.prefix}-triggers",
      "--pipelines-account=${var.prefix}-pipelines@${var.project_id}.iam.gserviceaccount.com",
    ],
    [for name, value in local.planned_env : "--env=${name}=${value}"],
    [for name, secret in var.function_secrets : "--secret=${name}=${secret.secret}:${secret.version}"],
    [for secret in var.step_secrets : "--step-secret=${secret}"],
    var.notify_bucket != "" ? ["--notify-bucket=${var.notify_bucket}"] : []
  )
}

check "preflight" {
  assert {
    condition     = data.external.preflight.result.warnings == ""
    error_message = "Relay preflight warnings:\n${data.external.preflight.result.warnings}"
  }
}
