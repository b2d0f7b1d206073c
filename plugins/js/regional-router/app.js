// Regional router: assigns each message to the team of the sender's CRM
// region, with a backup pool, and records the region in a custom field.
//
// Reads the teams from `config`, the region from `crm`, logs through `log`.
// A denied or failing import is not an error: the plugin falls back (no
// config: defaults; no region: the backup pool) and says so in its message.

import { getAll } from 'enrichd:plugin/config@0.2.0';
import { lookupEmail } from 'enrichd:plugin/crm@0.2.0';
import { log } from 'enrichd:plugin/log@0.2.0';
import { route, settingsFrom } from './routing.js';

/** A host error (`{ tag: 'denied', val: '…' }`) as `denied: …`. */
function reason(e) {
  const err = e?.payload ?? e;
  return err?.tag ? `${err.tag}: ${err.val}` : String(err);
}

function tryLog(level, message) {
  // Logging is best effort: a denied `log` must not fail the delivery.
  try {
    log(level, message);
  } catch {}
}

/** @returns {import('enrichd:plugin/types@0.2.0').AssignmentSpec} */
function spec(pool) {
  return { users: pool.users, assignToAnyUser: pool.assignToAnyUser };
}

/** @type {typeof import('enrichd:plugin/handler@0.2.0')} */
export const handler = {
  handle(delivery) {
    const notes = [];
    let settings;
    try {
      settings = settingsFrom(getAll());
    } catch (e) {
      settings = settingsFrom([]);
      notes.push(`config ${reason(e)}`);
    }
    let region = '';
    try {
      const answer = lookupEmail(delivery.sender.address);
      region = new Map(answer?.fields ?? []).get('region') ?? '';
    } catch (e) {
      notes.push(`crm ${reason(e)}`);
      tryLog('warn', `no CRM region (${reason(e)}): backup pool`);
    }
    const r = route(region, settings);
    tryLog('info', `${delivery.id}: region ${region || '?'} -> ${JSON.stringify(r.main)}`);
    /** @type {import('enrichd:plugin/types@0.2.0').Action[]} */
    const actions = [
      {
        name: `Route to ${r.region}`,
        value: {
          tag: 'assign',
          val: { mainAssignment: spec(r.main), backupAssignments: r.backups.map(spec) },
        },
      },
      {
        name: 'Record region',
        value: { tag: 'set-custom-fields', val: [[settings['region-field'], r.region]] },
      },
    ];
    return { actions, message: [`routed by ${r.region}`, ...notes].join('; ') };
  },
};
