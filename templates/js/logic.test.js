// Unit tests of {{ name }}'s logic: `npm test` (node --test).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DEFAULTS, matchingKeywords, settingsFrom } from './logic.js';

test('a keyword in the subject or body matches', () => {
  assert.deepEqual(matchingKeywords('URGENT: help', undefined, DEFAULTS), ['urgent']);
  assert.deepEqual(matchingKeywords('Hi', 'reply asap', DEFAULTS), ['asap']);
});

test('no keyword, no match', () => {
  assert.deepEqual(matchingKeywords('Lunch?', '', DEFAULTS), []);
});

test('config overrides the defaults', () => {
  const settings = settingsFrom([['keywords', 'coverage'], ['unknown', 'x']]);
  assert.deepEqual(matchingKeywords('Coverage', undefined, settings), ['coverage']);
  assert.equal('unknown' in settings, false);
});
