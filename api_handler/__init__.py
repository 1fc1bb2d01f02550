"""The REST API's Lambda handler (API Gateway REST proxy events)."""
