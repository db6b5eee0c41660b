"""The model registry: versions, aliases, audit trail, artifact store and the promotion gate."""
