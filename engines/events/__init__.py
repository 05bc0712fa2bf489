"""Artifact events: the dataset_events outbox as an ordered feed, over SSE and webhooks."""
