"""The OPA-Envoy plugin as a peer: the same CheckRequests against it and the sidecar."""
