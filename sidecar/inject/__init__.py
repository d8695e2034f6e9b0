"""`opa-sidecar inject`: add the authorizer to the pod templates of Kubernetes manifests.

A pure YAML transformation: documents in, documents out, nothing contacted."""
