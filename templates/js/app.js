// {{ name }}: an enrichd plugin (world `{{ world }}`).
{% if handler %}
//
// For each delivery: tags it when its subject or body holds one of the
// keywords in its config. A denied or failing import is not an error: the
// plugin falls back to its defaults and says so in its message.
{% endif %}
//
// Types: types/{{ world }}.d.ts (generated from wit/plugin.wit); editors
// check this file against them (jsconfig.json), `npm run check` too.

import { getAll } from 'enrichd:plugin/config@{{ wit_version }}';
import { log } from 'enrichd:plugin/log@{{ wit_version }}';
import { matchingKeywords, settingsFrom } from './logic.js';

/** Logging is best effort: a denied `log` must not fail the call. */
function tryLog(level, message) {
  try {
    log(level, message);
  } catch {}
}
{% if handler %}

/** @type {typeof import('enrichd:plugin/handler@{{ wit_version }}')} */
export const handler = {
  handle(delivery) {
    let settings;
    let note = '';
    try {
      settings = settingsFrom(getAll());
    } catch (e) {
      // A host error arrives as e.payload: { tag: 'denied', val: '…' }.
      settings = settingsFrom([]);
      note = `; config ${e.payload?.tag ?? e}: defaults`;
    }
    const found = matchingKeywords(delivery.subject, delivery.bodyText, settings);
    tryLog('info', `${delivery.id}: keywords ${found.join(', ')}`);
    /** @type {import('enrichd:plugin/types@{{ wit_version }}').Action[]} */
    const actions = [];
    if (found.length) {
      actions.push({ name: `Tag ${settings.tag}`, value: { tag: 'tag', val: { tags: [settings.tag] } } });
    }
    return { actions, message: `${found.length} keyword(s)${note}` };
  },
};
{% endif %}
{% if events %}

/** @type {typeof import('enrichd:plugin/events@{{ wit_version }}')} */
export const events = {
  handleEvent(event) {
    tryLog('info', `${event.kindName} for ${event.address}`);
  },
};
{% endif %}
