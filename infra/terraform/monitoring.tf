# Relay's log-based metrics and alert policies, read from infra/monitoring/*.yaml: the files infra/deploy.sh renders
# with relaycli/monitoring.py for gcloud, filled with the same values (tests/infra/test_monitoring.py holds the two
# to each other). Each alert notifies the channels in alert_channels.

locals {
  monitoring_values = {
    prefix                   = var.prefix
    dead_letter_subscription = google_pubsub_subscription.dead_letter.name
    rejections_per_5m        = var.alert_rejections_per_5m
    failures_in_a_row        = var.alert_failures_in_a_row
  }
  log_metrics = {
    for metric in yamldecode(templatefile("${path.module}/../monitoring/metrics.yaml", { prefix = var.prefix })) :
    metric.name => metric
  }
  alert_policies = {
    for policy in yamldecode(templatefile("${path.module}/../monitoring/alerts.yaml", local.monitoring_values)) :
    policy.displayName => policy
  }
}

resource "google_logging_metric" "relay" {
  for_each = local.log_metrics

  project          = var.project_id
  name             = each.value.name
  description      = each.value.description
  filter           = each.value.filter
  label_extractors = each.value.labelExtractors
  value_extractor  = can(each.value.valueExtractor) ? each.value.valueExtractor : null

  metric_descriptor {
    metric_kind = each.value.metricDescriptor.metricKind
    value_type  = each.value.metricDescriptor.valueType
    unit        = each.value.metricDescriptor.unit

    dynamic "labels" {
      for_each = each.value.metricDescriptor.labels
      content {
        key         = labels.value.key
        value_type  = labels.value.valueType
        description = labels.value.description
      }
    }
  }

  dynamic "bucket_options" {
    for_each = can(each.value.bucketOptions) ? [each.value.bucketOptions.exponentialBuckets] : []
    content {
      exponential_buckets {
        num_finite_buckets = bucket_options.value.numFiniteBuckets
        growth_factor      = bucket_options.value.growthFactor
        scale              = bucket_options.value.scale
      }
    }
  }
}

resource "google_monitoring_alert_policy" "relay" {
  for_each = local.alert_policies

  project               = var.project_id
  display_name          = each.value.displayName
  combiner              = each.value.combiner
  notification_channels = var.alert_channels

  documentation {
    content   = each.value.documentation.content
    mime_type = each.value.documentation.mimeType
  }

  dynamic "conditions" {
    for_each = [for condition in each.value.conditions : condition if can(condition.conditionThreshold)]
    content {
      display_name = conditions.value.displayName
      condition_threshold {
        filter          = conditions.value.conditionThreshold.filter
        comparison      = conditions.value.conditionThreshold.comparison
        threshold_value = conditions.value.conditionThreshold.thresholdValue
        duration        = conditions.value.conditionThreshold.duration

        dynamic "aggregations" {
          for_each = conditions.value.conditionThreshold.aggregations
          content {
            alignment_period     = aggregations.value.alignmentPeriod
            per_series_aligner   = aggregations.value.perSeriesAligner
            cross_series_reducer = can(aggregations.value.crossSeriesReducer) ? aggregations.value.crossSeriesReducer : null
            group_by_fields      = can(aggregations.value.groupByFields) ? aggregations.value.groupByFields : null
          }
        }
      }
    }
  }

  dynamic "conditions" {
    for_each = [for condition in each.value.conditions : condition if can(condition.conditionMatchedLog)]
    content {
      display_name = conditions.value.displayName
      condition_matched_log {
        filter           = conditions.value.conditionMatchedLog.filter
        label_extractors = conditions.value.conditionMatchedLog.labelExtractors
      }
    }
  }

  alert_strategy {
    auto_close = each.value.alertStrategy.autoClose

    dynamic "notification_rate_limit" {
      for_each = can(each.value.alertStrategy.notificationRateLimit) ? [each.value.alertStrategy.notificationRateLimit] : []
      content {
        period = notification_rate_limit.value.period
      }
    }
  }

  # An alert on a log-based metric needs the metric to exist first.
  depends_on = [google_logging_metric.relay]
}
