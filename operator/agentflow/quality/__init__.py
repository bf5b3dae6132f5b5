"""Quality drift of Agents, PURE: what each LLM step attempt says about an Agent × PromptVersion (signals.py) and a
change-point test over those signals (drift.py). No clock, no I/O: the operator's services feed it journal events
and write what it decides (agentflow.services.quality)."""

from .drift import Alarm, Cleared, DriftSettings, Monitor, RateCusum, ValueCusum
from .signals import RATE_SIGNALS, SIGNALS, VALUE_SIGNALS, Observation, SignalTracker, Subject, llm_subjects

__all__ = ["RATE_SIGNALS", "SIGNALS", "VALUE_SIGNALS", "Alarm", "Cleared", "DriftSettings", "Monitor",
           "Observation", "RateCusum", "SignalTracker", "Subject", "ValueCusum", "llm_subjects"]
