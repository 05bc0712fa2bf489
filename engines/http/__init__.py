"""HTTP plumbing: errors, body limits, HEAD, the lean fast path, OpenAPI and /docs."""
