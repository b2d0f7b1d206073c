"""{{ name }}: an enrichd plugin (world `{{ world }}`).
{% if handler %}

For each delivery: tags it when its subject or body holds one of the
keywords in its config. A denied or failing import is not an error: the
plugin falls back to its defaults and says so in its message.
{% endif %}
{% if events %}

For each EngageLab event: logs it.
{% endif %}
"""

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import log
{% if handler %}
from wit_world.imports import config, types
{% endif %}
{% if events %}
from wit_world.exports import events
{% endif %}
{% if handler %}

import logic
{% endif %}


def _log(level, message):
    # Logging is best effort: a denied `log` must not fail the call.
    try:
        log.log(level, message)
    except Err:
        pass
{% if handler %}


class Handler(exports.Handler):
    def handle(self, delivery: types.Delivery) -> types.PluginOutput:
        try:
            settings = logic.settings_from(config.get_all())
            note = ""
        except Err as err:
            # err.value is a types.HostError_* (Denied, Unavailable, …).
            settings = logic.settings_from([])
            note = f"; config {type(err.value).__name__}: defaults"
        found = logic.matching_keywords(delivery.subject, delivery.body_text, settings)
        _log(log.Level.INFO, f"{delivery.id}: keywords {found}")
        actions = []
        if found:
            tag = types.ActionValue_Tag(types.TagAction([settings["tag"]]))
            actions.append(types.Action(f"Tag {settings['tag']}", tag))
        return types.PluginOutput(actions, f"{len(found)} keyword(s){note}")
{% endif %}
{% if events %}


class Events(exports.Events):
    def handle_event(self, event: events.EngagelabEvent) -> None:
        _log(log.Level.INFO, f"{event.kind_name} for {event.address}")
{% endif %}
