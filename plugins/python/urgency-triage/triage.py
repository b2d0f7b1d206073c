"""Urgency triage, the pure part: which priority a message gets.

Kept free of the WIT bindings (they exist only inside componentize-py's
build), so `python -m unittest` tests it on any Python without building.
"""

from dataclasses import dataclass, field

# What the plugin uses when its config does not say (or `config` is denied).
DEFAULTS = {
    "keywords": "urgent, asap, immediately, outage, emergency",
    "tag": "Urgent",
    "priority-field": "Priority",
    "raise-tiers": "gold, platinum, vip",
    "escalate-to": "",
}

# Lowest to highest; a tier in `raise-tiers` moves a message one step up.
LEVELS = ["P3", "P2", "P1"]


def split_list(value):
    """`"a, B ,,c"` → `["a", "b", "c"]`: lower-cased, blanks dropped."""
    return [part.strip().lower() for part in value.split(",") if part.strip()]


@dataclass
class Decision:
    """The outcome for one message."""

    priority: str
    keywords: list = field(default_factory=list)
    raised_by_tier: bool = False

    @property
    def urgent(self):
        """P2 and P1 messages get the urgent tag."""
        return self.priority != "P3"


def decide(subject, body, tier, settings):
    """The decision for a message: keywords found in the subject or body
    make it P2, a customer tier in `raise-tiers` raises it one level."""
    text = f"{subject}\n{body or ''}".lower()
    found = [k for k in split_list(settings["keywords"]) if k in text]
    level = 1 if found else 0
    raised = bool(tier) and tier.lower() in split_list(settings["raise-tiers"])
    if raised:
        level = min(level + 1, len(LEVELS) - 1)
    return Decision(LEVELS[level], found, raised)


def settings_from(pairs):
    """The plugin's settings: `DEFAULTS` overridden by the config pairs."""
    merged = dict(DEFAULTS)
    merged.update({k: v for k, v in pairs if k in DEFAULTS})
    return merged
