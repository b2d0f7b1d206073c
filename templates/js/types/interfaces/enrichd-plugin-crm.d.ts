/// <reference path="./enrichd-plugin-types.d.ts" />
declare module 'enrichd:plugin/crm@0.2.0' {
  /**
   * The customer with this email address (case-insensitive), from the
   * first source (in config order) that has an answer; none when no
   * source knows the address or its domain.
   */
  export function lookupEmail(email: string): CrmAnswer | undefined;
  /**
   * The record of a domain (e.g. `pinnilly.com`), fresh or stale.
   */
  export function lookupDomain(domain: string): CrmAnswer | undefined;
  export type HostError = import('enrichd:plugin/types@0.2.0').HostError;
  export type StringMap = import('enrichd:plugin/types@0.2.0').StringMap;
  /**
   * Where an answer came from.
   * # Variants
   * 
   * ## `"fresh"`
   * 
   * The backend's answer, now or within the cache's freshness window.
   * ## `"stale"`
   * 
   * The last value the backend gave: it could not answer in time now.
   * `age-ms` says how old it is.
   * ## `"domain"`
   * 
   * No record for the address; the record of its domain (company-level
   * fields such as region).
   */
  export type Provenance = 'fresh' | 'stale' | 'domain';
  /**
   * A CRM record and where it came from.
   */
  export interface CrmAnswer {
    /**
     * The record: claimNumber, policyNumber, region, tier, …
     */
    fields: StringMap,
    /**
     * Which step of the lookup answered.
     */
    provenance: Provenance,
    /**
     * Age of the data in milliseconds (0 for an answer fetched just now).
     */
    ageMs: bigint,
    /**
     * The name of the CRM source that answered.
     */
    source: string,
  }
}
