#!/bin/sh
# Copies what the chart packages from deploy/ (the generated Prometheus rules and Grafana dashboards) into
# files/, where helm can read them. Run it after regenerating deploy/; tests/k8s/test_chart_render.py fails
# while the copies differ from deploy/.
set -eu
chart="$(cd "$(dirname "$0")" && pwd)"
deploy="$chart/../../deploy"
cp "$deploy/prometheus/dscore-rules.yaml" "$chart/files/prometheus/dscore-rules.yaml"
rm -f "$chart"/files/dashboards/*.json
cp "$deploy"/grafana/dashboards/*.json "$chart/files/dashboards/"
