# Custom health checks: GET /health/live answers 200, /health/ready 500.
package system.health

import rego.v1

live := true

ready := input.plugins_ready == false
