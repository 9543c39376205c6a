"""Webhooks: the platform's endpoints, signed deliveries of the outbox (Standard Webhooks),
retries with backoff, a delivery log and replays (see docs/webhooks.md)."""
