#!/usr/bin/env bash
# promtool and prometheus for the rule and dashboard tests (tests/deploy/): Debian's `prometheus` package
# has both. Installed with apt-get when missing and allowed (see `need` in scripts/lib.sh); prints the
# two paths, one a line.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/lib.sh"

need promtool prometheus "promtool (Prometheus rule checks)"
need prometheus prometheus "prometheus (dashboard query checks)"
command -v promtool
command -v prometheus
