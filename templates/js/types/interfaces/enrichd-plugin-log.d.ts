/// <reference path="./enrichd-plugin-types.d.ts" />
declare module 'enrichd:plugin/log@0.2.0' {
  /**
   * Write one log line. Over-long messages are cut by the host.
   */
  export function log(level: Level, message: string): void;
  export type HostError = import('enrichd:plugin/types@0.2.0').HostError;
  /**
   * Severity of a log line.
   * # Variants
   * 
   * ## `"trace"`
   * 
   * Very verbose diagnostics.
   * ## `"debug"`
   * 
   * Diagnostics.
   * ## `"info"`
   * 
   * Normal operation.
   * ## `"warn"`
   * 
   * Something unexpected that the plugin handled.
   * ## `"error"`
   * 
   * Something failed.
   */
  export type Level = 'trace' | 'debug' | 'info' | 'warn' | 'error';
}
