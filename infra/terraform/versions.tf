terraform {
  # strcontains() filters the function upload; terraform_data runs the dead-letter step; check shows the preflight's
  # warnings.
  required_version = ">= 1.5"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = "~> 7.0"
    }
    archive = {
      source  = "hashicorp/archive"
      version = "~> 2.4"
    }
    # The preflight, read as an external data source while planning.
    external = {
      source  = "hashicorp/external"
      version = "~> 2.3"
    }
  }
}
