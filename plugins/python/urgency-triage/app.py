"""Urgency triage: tags urgent mail and sets its priority custom field.

Reads keywords and tiers from `config`, the sender's tier from `crm`, logs
through `log`. A denied or failing import is not an error: the plugin falls
back (defaults for config, no tier for crm) and says so in its message.
"""

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import config, crm, log, types

import triage


def _log(level, message):
    # Logging is best effort: a denied `log` must not fail the delivery.
    try:
        log.log(level, message)
    except Err:
        pass


def _reason(err):
    """`denied: …` for a host error, for the plugin's message."""
    kind = type(err.value).__name__.split("_")[-1].lower()
    return f"{kind}: {err.value.value}"


class Handler(exports.Handler):
    def handle(self, delivery: types.Delivery) -> types.PluginOutput:
        notes = []
        try:
            settings = triage.settings_from(config.get_all())
        except Err as err:
            settings = triage.settings_from([])
            notes.append(f"config {_reason(err)}")
        tier = ""
        try:
            answer = crm.lookup_email(delivery.sender.address)
            if answer is not None:
                tier = dict(answer.fields).get("tier", "")
        except Err as err:
            notes.append(f"crm {_reason(err)}")
            _log(log.Level.WARN, f"no CRM tier ({_reason(err)}); triage on keywords only")

        decision = triage.decide(delivery.subject, delivery.body_text, tier, settings)
        actions = []
        if decision.urgent:
            actions.append(
                types.Action(
                    "Tag urgent mail",
                    types.ActionValue_Tag(types.TagAction([settings["tag"]])),
                )
            )
        actions.append(
            types.Action(
                "Set priority",
                types.ActionValue_SetCustomFields([(settings["priority-field"], decision.priority)]),
            )
        )
        if decision.priority == "P1" and settings["escalate-to"]:
            to = [types.EmailAddress("", settings["escalate-to"])]
            comment = f"P1: {', '.join(decision.keywords)} from a {tier} customer"
            actions.append(
                types.Action(
                    "Escalate P1",
                    types.ActionValue_ForwardMessage(types.ForwardMessageAction(to, comment)),
                )
            )
        _log(log.Level.INFO, f"{delivery.id}: {decision.priority} (keywords {decision.keywords}, tier {tier!r})")
        message = f"{decision.priority}" + (f"; {'; '.join(notes)}" if notes else "")
        return types.PluginOutput(actions, message)
