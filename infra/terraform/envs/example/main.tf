# An environment: the Relay module with this project's settings. Copy this folder per environment (dev, prod),
# put the values in terraform.tfvars (see terraform.tfvars.example) and keep the state in a bucket.
terraform {
  required_version = ">= 1.5"

  # backend "gcs" {
  #   bucket = "my-project-terraform-state"
  #   prefix = "relay"
  # }
}

provider "google" {
  project = var.project_id
  region  = var.region
}

variable "project_id" {
  description = "Google Cloud project to deploy Relay into."
  type        = string
}

variable "region" {
  description = "Region of everything Relay deploys."
  type        = string
  default     = "europe-west1"
}

variable "prefix" {
  description = "Prefix of every resource name."
  type        = string
  default     = "relay"
}

variable "backend" {
  description = "vertex or kfp."
  type        = string
  default     = "vertex"
}

variable "relay_settings" {
  description = "Further RELAY_* settings of the functions."
  type        = map(string)
  default     = {}
}

variable "function_secrets" {
  description = "Secret Manager secrets the functions get as environment variables."
  type = map(object({
    secret  = string
    version = optional(string, "latest")
  }))
  default = {}
}

variable "step_secrets" {
  description = "Secret ids triggers may name as secret://ID for the pipeline steps."
  type        = list(string)
  default     = []
}

variable "notify_bucket" {
  description = "Optional data bucket announced on the trigger topic."
  type        = string
  default     = ""
}

variable "notify_prefix" {
  description = "Only objects under this prefix of notify_bucket."
  type        = string
  default     = ""
}

variable "catalog_dir" {
  description = "The catalog compiled with the steps image and the policy's URI (python -m pipelines.compile --image IMAGE --policy-uri URI --out DIR)."
  type        = string
}

variable "catalog_version" {
  description = "Folder of the published catalog and policy (the tag the catalog was compiled for)."
  type        = string
}

variable "policy_file" {
  description = "The deployment policy, published beside the catalog."
  type        = string
}

variable "records_retention_days" {
  description = "Days a deleted or replaced record stays restorable (0: the bucket's default)."
  type        = number
  default     = 0
}

module "relay" {
  source = "../.."

  project_id       = var.project_id
  region           = var.region
  prefix           = var.prefix
  backend          = var.backend
  relay_settings   = var.relay_settings
  function_secrets = var.function_secrets
  step_secrets     = var.step_secrets
  notify_bucket    = var.notify_bucket
  notify_prefix    = var.notify_prefix
  catalog_dir      = var.catalog_dir
  catalog_version  = var.catalog_version
  policy_file      = var.policy_file

  records_retention_days = var.records_retention_days
}

output "triggers_bucket" {
  description = "Drop trigger files here."
  value       = module.relay.triggers_bucket
}

output "triggers_topic" {
  description = "Publish triggers here."
  value       = module.relay.triggers_topic
}

output "results_bucket" {
  description = "Run records."
  value       = module.relay.results_bucket
}

output "catalog_bucket" {
  description = "Published catalogs and policies."
  value       = module.relay.catalog_bucket
}

output "catalog_uri" {
  description = "Where the functions read the catalog."
  value       = module.relay.catalog_uri
}

output "policy_uri" {
  description = "The policy the functions and the steps enforce."
  value       = module.relay.policy_uri
}

output "steps_image_repository" {
  description = "Where the steps image goes."
  value       = module.relay.steps_image_repository
}
