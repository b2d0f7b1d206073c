// {{ name }}: the pure logic, free of the WIT imports (they exist only
// inside the component), so `node --test` tests it without building.

/** What the plugin uses when its config does not say (or `config` is denied). */
export const DEFAULTS = { keywords: 'urgent, asap', tag: 'Urgent' };

/** The plugin's settings: `DEFAULTS` overridden by the config pairs. */
export function settingsFrom(pairs) {
  const settings = { ...DEFAULTS };
  for (const [key, value] of pairs) if (key in DEFAULTS) settings[key] = value;
  return settings;
}

/** The configured keywords found in the subject or body (any case). */
export function matchingKeywords(subject, body, settings) {
  const text = `${subject}\n${body ?? ''}`.toLowerCase();
  return settings.keywords
    .split(',')
    .map((k) => k.trim().toLowerCase())
    .filter((k) => k && text.includes(k));
}
