"""Signed webhook subscriptions (Standard Webhooks) fed from the events outbox."""
