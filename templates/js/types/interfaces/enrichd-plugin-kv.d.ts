/// <reference path="./enrichd-plugin-types.d.ts" />
declare module 'enrichd:plugin/kv@0.2.0' {
  /**
   * The value of `key` in this plugin's namespace.
   */
  export function get(key: string): string | undefined;
  /**
   * Set `key` in this plugin's namespace. Keys are at most 256 bytes and
   * values at most 64 KiB (`host-error.invalid` beyond).
   */
  export function set(key: string, value: string): void;
  /**
   * Remove `key` from this plugin's namespace.
   */
  export { _delete as delete };
  function _delete(key: string): void;
  /**
   * The value of `key` in another plugin's namespace (`denied` unless the
   * config grants this plugin read access to it).
   */
  export function getFrom(namespace: string, key: string): string | undefined;
  export type HostError = import('enrichd:plugin/types@0.2.0').HostError;
}
