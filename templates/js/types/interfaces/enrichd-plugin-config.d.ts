/// <reference path="./enrichd-plugin-types.d.ts" />
declare module 'enrichd:plugin/config@0.2.0' {
  /**
   * The value of one key, or none when it is not set.
   */
  export function get(key: string): string | undefined;
  /**
   * Every key and value, sorted by key.
   */
  export function getAll(): StringMap;
  export type HostError = import('enrichd:plugin/types@0.2.0').HostError;
  export type StringMap = import('enrichd:plugin/types@0.2.0').StringMap;
}
