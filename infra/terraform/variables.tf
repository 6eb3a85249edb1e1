variable "project_id" {
  description = "Google Cloud project that holds every Relay resource (the trigger bucket must share it with the functions)."
  type        = string

  validation {
    condition     = can(regex("^[a-z][-a-z0-9]{4,28}[a-z0-9]$", var.project_id))
    error_message = "project_id must be a project id (6-30 lower-case letters, digits or dashes), not a name or number."
  }
}

variable "region" {
  description = "Region of the functions, their triggers, the buckets, Artifact Registry and (for vertex) the pipeline jobs."
  type        = string
  default     = "europe-west1"
}

variable "prefix" {
  description = "Prefix of every resource name; buckets are additionally prefixed with the project id. infra/deploy.sh --prefix."
  type        = string
  default     = "relay"

  validation {
    # The longest service account id is PREFIX-functions, and account ids stop at 30 characters.
    condition     = can(regex("^[a-z][a-z0-9-]{1,13}[a-z0-9]$", var.prefix))
    error_message = "prefix must be 3-15 lower-case letters, digits or dashes, starting with a letter."
  }
}

variable "backend" {
  description = "RELAY_BACKEND: vertex (Vertex AI Pipelines in this project) or kfp (a Kubeflow Pipelines API, see relay_settings)."
  type        = string
  default     = "vertex"

  validation {
    condition     = contains(["vertex", "kfp"], var.backend)
    error_message = "backend must be vertex or kfp; the local backend runs on a developer's machine only."
  }
}

variable "relay_settings" {
  description = "Further RELAY_* settings of the functions, e.g. { RELAY_KFP_HOST = \"https://...\" }. Those derived from this module's resources cannot be set; credentials go in function_secrets."
  type        = map(string)
  default     = {}

  validation {
    condition = alltrue([for name in keys(var.relay_settings) : contains([
      "RELAY_AUTH", "RELAY_KFP_HOST", "RELAY_KFP_AUDIENCE", "RELAY_KFP_EXPERIMENT", "RELAY_VERTEX_LOCATION",
      "RELAY_VERTEX_ENDPOINT", "RELAY_MAX_EVENT_AGE", "RELAY_CLAIM_LEASE",
      "RELAY_DEPLOYMENT_NAME", "RELAY_BOARD_EVERY", "RELAY_AUDIT_AGE",
    ], name)])
    error_message = "relay_settings takes RELAY_AUTH, RELAY_KFP_HOST, RELAY_KFP_AUDIENCE, RELAY_KFP_EXPERIMENT, RELAY_VERTEX_LOCATION, RELAY_VERTEX_ENDPOINT, RELAY_MAX_EVENT_AGE, RELAY_CLAIM_LEASE, RELAY_DEPLOYMENT_NAME, RELAY_BOARD_EVERY and RELAY_AUDIT_AGE; RELAY_STATIC_TOKEN belongs in function_secrets."
  }
}

variable "function_secrets" {
  description = "Secret Manager secrets the functions get as environment variables, by variable name, e.g. { RELAY_STATIC_TOKEN = { secret = \"kfp-token\" } }. The secrets must exist; the functions' account may read these only."
  type = map(object({
    secret  = string
    version = optional(string, "latest")
  }))
  default = {}

  validation {
    condition     = alltrue([for name in keys(var.function_secrets) : can(regex("^[A-Z_][A-Z0-9_]*$", name))])
    error_message = "function_secrets keys are environment variable names (upper case, digits, underscores)."
  }
}

variable "step_secrets" {
  description = "Secret Manager secret ids that triggers may name as secret://ID for the pipeline steps; the pipelines' account may read these only."
  type        = list(string)
  default     = []
}

variable "notify_bucket" {
  description = "Optional existing data bucket whose finalized objects are announced on the trigger topic and read as trigger files or routed (\"\" for none); the policy must list it under notifications for that topic."
  type        = string
  default     = ""
}

variable "notify_prefix" {
  description = "With notify_bucket: only objects under this prefix are announced (\"\" for all)."
  type        = string
  default     = ""

  validation {
    condition     = var.notify_prefix == "" || var.notify_bucket != ""
    error_message = "notify_prefix needs notify_bucket."
  }
}

variable "catalog_dir" {
  description = "Folder of the compiled catalog (<name>.yaml), compiled with the steps image and this version's policy: python -m pipelines.compile --image IMAGE --policy POLICY_FILE --policy-uri gs://PROJECT-PREFIX-catalog/VERSION/policy.yaml --results-uri gs://PROJECT-PREFIX-results --out DIR."
  type        = string
}

variable "catalog_version" {
  description = "Folder of the published catalog and policy in gs://PROJECT-PREFIX-catalog/ (Cloud Build uses the commit). The specs name the policy under it, so it is chosen before compiling."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$", var.catalog_version))
    error_message = "catalog_version must be 1-100 letters, digits, dots, dashes or underscores (one folder name)."
  }
}

variable "policy_file" {
  description = "The deployment policy (YAML), published as policy.yaml beside the catalog: RELAY_POLICY_URI."
  type        = string
}

variable "records_retention_days" {
  description = "Days a deleted or replaced record stays restorable (the results bucket's soft delete), 7 to 90; 0 leaves the bucket's setting alone. infra/deploy.sh --records-retention Nd."
  type        = number
  default     = 0

  validation {
    condition     = var.records_retention_days == 0 || (var.records_retention_days >= 7 && var.records_retention_days <= 90)
    error_message = "records_retention_days must be 0 or 7 to 90 (Cloud Storage's soft delete bounds)."
  }
}

variable "audit_retention_days" {
  description = "Days each audit trail entry is kept, unremovable and unreplaced (the audit bucket's retention policy), 1 to 36500. infra/deploy.sh --audit-retention Nd."
  type        = number
  default     = 365

  validation {
    condition     = var.audit_retention_days >= 1 && var.audit_retention_days <= 36500
    error_message = "audit_retention_days must be 1 to 36500."
  }
}

variable "lock_audit_retention" {
  description = "Lock the audit bucket's retention policy: irreversible; the period can then never be shortened nor the bucket deleted while it holds an entry younger than it. infra/deploy.sh --lock-audit-retention."
  type        = bool
  default     = false
}

variable "reconcile_schedule" {
  description = "When Cloud Scheduler asks on_schedule to reconcile launched runs with their backend (cron, UTC). infra/deploy.sh --reconcile-schedule."
  type        = string
  default     = "*/5 * * * *"
}

variable "functions_source_dir" {
  description = "The functions/ folder to upload (\"\": this repository's). __pycache__ and *.egg-info are left out, as infra/deploy.sh does."
  type        = string
  default     = ""
}

variable "runtime" {
  description = "Python runtime of the functions (the one the repository is tested on)."
  type        = string
  default     = "python311"
}

variable "memory" {
  description = "Memory of one function instance."
  type        = string
  default     = "512Mi"
}

variable "cpu" {
  description = "vCPUs of one function instance; concurrency above 1 needs at least 1."
  type        = string
  default     = "1"
}

variable "concurrency" {
  description = "Events one instance takes at once (Relay locks what is not thread-safe)."
  type        = number
  default     = 8

  validation {
    condition     = var.concurrency >= 1 && var.concurrency <= 1000
    error_message = "concurrency must be 1 to 1000."
  }
}

variable "max_instances" {
  description = "Upper bound on instances per function: caps the load Relay puts on the pipelines backend."
  type        = number
  default     = 10
}

variable "timeout_seconds" {
  description = "Function timeout; event-driven functions are cut off at 540 s, and Relay submits without waiting for the run."
  type        = number
  default     = 540

  validation {
    condition     = var.timeout_seconds >= 1 && var.timeout_seconds <= 540
    error_message = "timeout_seconds must be 1 to 540 for event-driven functions."
  }
}

variable "max_delivery_attempts" {
  description = "Deliveries of an event before Pub/Sub moves it to the dead-letter topic."
  type        = number
  default     = 15

  validation {
    condition     = var.max_delivery_attempts >= 5 && var.max_delivery_attempts <= 100
    error_message = "max_delivery_attempts must be 5 to 100 (Pub/Sub's bounds)."
  }
}

variable "configure_dead_letter" {
  description = "Run infra/deploy.sh --dead-letter-only after the functions change: Eventarc creates their subscriptions, which Terraform cannot manage. Needs bash and gcloud where Terraform runs."
  type        = bool
  default     = true
}

variable "build_service_account" {
  description = "Email of the account Cloud Build uses for the function builds (\"\": the project's default). It is given read access to the sources bucket."
  type        = string
  default     = ""
}

variable "preflight_python" {
  description = "The Python that runs relay preflight while Terraform plans: one with the repository's requirements, such as the one that compiled the catalog (.venv/bin/python)."
  type        = string
  default     = "python3"
}

variable "enable_apis" {
  description = "Enable the APIs Relay uses (never disabled on destroy: other things in the project may use them)."
  type        = bool
  default     = true
}

variable "labels" {
  description = "Labels added to the buckets, topics and functions."
  type        = map(string)
  default     = {}
}

variable "alert_channels" {
  description = "Notification channels the alert policies notify, as projects/PROJECT/notificationChannels/ID (create them in Cloud Monitoring first). infra/deploy.sh --alert-channel."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for channel in var.alert_channels : can(regex("^projects/[a-z][-a-z0-9]{4,28}[a-z0-9]/notificationChannels/[0-9]+$", channel))])
    error_message = "alert_channels takes projects/PROJECT/notificationChannels/ID names."
  }
}

variable "alert_rejections_per_5m" {
  description = "The rejections alert fires when more triggers than this of one tenant are rejected within 5 minutes. infra/deploy.sh --alert-rejections."
  type        = number
  default     = 10

  validation {
    condition     = var.alert_rejections_per_5m >= 1
    error_message = "alert_rejections_per_5m must be at least 1."
  }
}

variable "alert_failures_in_a_row" {
  description = "The failures alert fires when attempt N (or later) of a run fails after the attempts before it failed. infra/deploy.sh --alert-failures."
  type        = number
  default     = 3

  validation {
    condition     = var.alert_failures_in_a_row >= 2
    error_message = "alert_failures_in_a_row must be at least 2."
  }
}
