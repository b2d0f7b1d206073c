/// <reference path="./interfaces/enrichd-plugin-config.d.ts" />
/// <reference path="./interfaces/enrichd-plugin-crm.d.ts" />
/// <reference path="./interfaces/enrichd-plugin-events.d.ts" />
/// <reference path="./interfaces/enrichd-plugin-kv.d.ts" />
/// <reference path="./interfaces/enrichd-plugin-log.d.ts" />
/// <reference path="./interfaces/enrichd-plugin-types.d.ts" />
declare module 'enrichd:plugin/event-plugin@0.2.0' {
  export type * as EnrichdPluginConfig020 from 'enrichd:plugin/config@0.2.0'; // import enrichd:plugin/config@0.2.0
  export type * as EnrichdPluginCrm020 from 'enrichd:plugin/crm@0.2.0'; // import enrichd:plugin/crm@0.2.0
  export type * as EnrichdPluginKv020 from 'enrichd:plugin/kv@0.2.0'; // import enrichd:plugin/kv@0.2.0
  export type * as EnrichdPluginLog020 from 'enrichd:plugin/log@0.2.0'; // import enrichd:plugin/log@0.2.0
  export type * as EnrichdPluginTypes020 from 'enrichd:plugin/types@0.2.0'; // import enrichd:plugin/types@0.2.0
  export * as events from 'enrichd:plugin/events@0.2.0'; // export enrichd:plugin/events@0.2.0
}
