// Regional routing, the pure part: which pool a message is assigned to.
//
// Kept free of the WIT imports (they exist only inside the component), so
// `node --test` tests it without building.

/** What the plugin uses when its config does not say (or `config` is denied). */
export const DEFAULTS = {
  // `REGION => user, user; REGION => user`: the team for each CRM region.
  teams: '',
  // The pool tried when the region's team has no one available.
  backup: '',
  // The custom field that records the region the message was routed by.
  'region-field': 'Region',
};

/** `"EMEA => Ana, bo@x.com; NA => Cy"` → `Map { "emea" => ["Ana", "bo@x.com"], … }`. */
export function parseTeams(text) {
  const teams = new Map();
  for (const rule of text.split(';')) {
    const [region, users] = rule.split('=>').map((s) => (s ?? '').trim());
    if (!region || !users) continue;
    const list = users.split(',').map((u) => u.trim()).filter(Boolean);
    if (list.length) teams.set(region.toLowerCase(), list);
  }
  return teams;
}

/** The plugin's settings: `DEFAULTS` overridden by the config pairs. */
export function settingsFrom(pairs) {
  const settings = { ...DEFAULTS };
  for (const [key, value] of pairs) if (key in DEFAULTS) settings[key] = value;
  return settings;
}

/**
 * The routing for a region (`''` when unknown): the region's team first,
 * then the backup pool, then anyone in the mailbox — so a message is always
 * assigned, even when the CRM is unavailable or denied.
 */
export function route(region, settings) {
  const team = parseTeams(settings.teams).get(region.toLowerCase());
  const backup = settings.backup.split(',').map((u) => u.trim()).filter(Boolean);
  const pools = [];
  if (team) pools.push({ users: team });
  if (backup.length) pools.push({ users: backup });
  pools.push({ assignToAnyUser: true });
  return { region: team ? region : 'unrouted', main: pools[0], backups: pools.slice(1) };
}
