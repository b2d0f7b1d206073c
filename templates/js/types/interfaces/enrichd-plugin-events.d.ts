/// <reference path="./enrichd-plugin-types.d.ts" />
declare module 'enrichd:plugin/events@0.2.0' {
  /**
   * Handle one event. Events are delivered at least once: a plugin must
   * tolerate seeing the same event twice after a crash.
   */
  export function handleEvent(event: EngagelabEvent): void;
  export type PluginError = import('enrichd:plugin/types@0.2.0').PluginError;
  /**
   * What happened. Status events: `target`, `sent`, `delivered`,
   * `invalid-email`, `soft-bounce`; response events: `open`, `click`,
   * `unsubscribe`, `report-spam`, `route`; `other` for kinds added later
   * (the raw name is in `kind-name`).
   * # Variants
   * 
   * ## `"target"`
   * 
   * The send request was accepted.
   * ## `"sent"`
   * 
   * Sent from EngageLab.
   * ## `"delivered"`
   * 
   * Delivered to the recipient's server.
   * ## `"invalid-email"`
   * 
   * Could not be delivered: a hard bounce.
   * ## `"soft-bounce"`
   * 
   * Reached the recipient's server, then came back.
   * ## `"open"`
   * 
   * The recipient opened the mail.
   * ## `"click"`
   * 
   * The recipient clicked a link.
   * ## `"unsubscribe"`
   * 
   * The recipient unsubscribed.
   * ## `"report-spam"`
   * 
   * The recipient reported the mail as spam.
   * ## `"route"`
   * 
   * A reply (or mail) arrived at a receiving route.
   * ## `"other"`
   * 
   * A kind this contract does not know yet.
   */
  export type EventKind = 'target' | 'sent' | 'delivered' | 'invalid-email' | 'soft-bounce' | 'open' | 'click' | 'unsubscribe' | 'report-spam' | 'route' | 'other';
  /**
   * One callback.
   */
  export interface EngagelabEvent {
    /**
     * The kind.
     */
    kind: EventKind,
    /**
     * The kind as EngageLab wrote it (`message_status` or `event`).
     */
    kindName: string,
    /**
     * EngageLab's message id.
     */
    messageId: string,
    /**
     * The address the event is about: the recipient for status, open,
     * click, unsubscribe and spam events; the sender of the reply for
     * `route` events. Lower-cased; empty when the callback has none.
     */
    address: string,
    /**
     * The mail's From (empty in target messages).
     */
    from: string,
    /**
     * The mail's subject (empty in target messages).
     */
    subject: string,
    /**
     * When EngageLab generated the event, unix milliseconds.
     */
    itime: bigint,
    /**
     * The recipient's email id.
     */
    emailId?: string,
    /**
     * invalid-email / soft-bounce: the error code.
     */
    errorCode?: bigint,
    /**
     * invalid-email / soft-bounce: the error sub-status and its text.
     */
    subStat?: bigint,
    /**
     * The error's description (`sub_stat_desc`).
     */
    subStatDesc?: string,
    /**
     * EngageLab's message (the mailbox's return log for bounces).
     */
    message?: string,
    /**
     * click: the URL clicked.
     */
    url?: string,
    /**
     * The customer's own fields (`custom_args`), as JSON.
     */
    customArgs: string,
    /**
     * The callback body as received (JSON), for fields added later.
     */
    rawJson: string,
  }
}
