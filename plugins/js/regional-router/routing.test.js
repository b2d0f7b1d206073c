// Unit tests of the routing logic: `node --test` in this directory.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DEFAULTS, parseTeams, route, settingsFrom } from './routing.js';

const settings = settingsFrom([
  ['teams', 'EMEA => Ana Lund, bo@example.com; NA => Cy Park'],
  ['backup', 'Policy Desk'],
  ['colour', 'red'],
]);

test('a known region goes to its team, then the backup pool, then anyone', () => {
  const r = route('emea', settings);
  assert.equal(r.region, 'emea');
  assert.deepEqual(r.main, { users: ['Ana Lund', 'bo@example.com'] });
  assert.deepEqual(r.backups, [{ users: ['Policy Desk'] }, { assignToAnyUser: true }]);
});

test('an unknown or missing region goes to the backup pool', () => {
  for (const region of ['APAC', '']) {
    const r = route(region, settings);
    assert.equal(r.region, 'unrouted');
    assert.deepEqual(r.main, { users: ['Policy Desk'] });
  }
});

test('with no config at all, anyone in the mailbox', () => {
  const r = route('EMEA', settingsFrom([]));
  assert.deepEqual([r.main, r.backups], [{ assignToAnyUser: true }, []]);
});

test('config keys override the defaults; unknown keys are ignored', () => {
  assert.equal(settings.backup, 'Policy Desk');
  assert.equal(settings['region-field'], DEFAULTS['region-field']);
  assert.equal('colour' in settings, false);
});

test('malformed team rules are skipped', () => {
  assert.deepEqual([...parseTeams('EMEA =>; => x; NA => a,,b').entries()], [['na', ['a', 'b']]]);
});
