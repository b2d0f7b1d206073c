/// <reference path="./enrichd-plugin-types.d.ts" />
declare module 'enrichd:plugin/handler@0.2.0' {
  /**
   * Handle one delivery and return the actions to apply, in order.
   */
  export function handle(delivery: Delivery): PluginOutput;
  export type Delivery = import('enrichd:plugin/types@0.2.0').Delivery;
  export type PluginOutput = import('enrichd:plugin/types@0.2.0').PluginOutput;
  export type PluginError = import('enrichd:plugin/types@0.2.0').PluginError;
}
