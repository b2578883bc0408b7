"""Sent now or queued: deliveries, the worker, bulk jobs, outcomes, pacing, stats, lifecycle."""
