"""The pure core: plain functions over dicts, no I/O. Everything else is a shell around it."""

from webhook.core.decision import BrokerPlan, Decision, Outcome
from webhook.core.expose import mutate

__all__ = ["BrokerPlan", "Decision", "Outcome", "mutate"]
