declare module 'enrichd:plugin/types@0.2.0' {
  /**
   * An ordered list of string pairs. Order is kept as given so that a
   * plugin's output is deterministic.
   */
  export type StringMap = Array<[string, string]>;
  /**
   * An email address as Emailgistics writes it:
   * `{ "emailAddress": { "name", "address" } }`.
   */
  export interface EmailAddress {
    /**
     * Display name; may be empty.
     */
    name: string,
    /**
     * The address itself, e.g. `adelev@contoso.com`.
     */
    address: string,
  }
  /**
   * One Emailgistics webhook delivery (the request payload).
   */
  export interface Delivery {
    /**
     * Unique identifier of the message (payload `id`).
     */
    id: string,
    /**
     * The event that triggered the webhook; today always `received`.
     * The host only runs plugins for events it knows.
     */
    event: string,
    /**
     * The Message-ID header, as supplied by Microsoft Graph.
     */
    internetMessageId: string,
    /**
     * When the message was received (RFC 3339), as sent.
     */
    received: string,
    /**
     * The shared mailbox the event occurred in.
     */
    mailbox: string,
    /**
     * Envelope sender.
     */
    sender: EmailAddress,
    /**
     * Header From; differs from `sender` for send-on-behalf.
     */
    from: EmailAddress,
    /**
     * Header To recipients.
     */
    to: Array<EmailAddress>,
    /**
     * Header Cc recipients.
     */
    cc: Array<EmailAddress>,
    /**
     * Subject line.
     */
    subject: string,
    /**
     * Whether the message has attachments.
     */
    hasAttachments: boolean,
    /**
     * When the webhook event occurred (ISO 8601), as sent.
     */
    timestamp: string,
    /**
     * The Emailgistics conversation id, e.g. `2L8WYB89Z`.
     */
    conversationId: string,
    /**
     * Plain-text body; present only when "Include message text" is on
     * and the text is not empty.
     */
    bodyText?: string,
    /**
     * The conversation's custom fields; present only when "Include
     * Custom Fields" is on and at least one value is set.
     */
    customFields?: StringMap,
    /**
     * The request body exactly as received (JSON), so a plugin can read
     * fields that were added to the payload after this contract.
     */
    rawJson: string,
  }
  /**
   * One candidate pool of an `assign` action (`AssignmentSpec`).
   * Exactly one of `users` (non-empty) or `assign-to-any-user: true` must
   * be set, or the host drops the action.
   */
  export interface AssignmentSpec {
    /**
     * Candidates by display name or email (case-insensitive on the
     * Emailgistics side; unknown names are dropped there).
     */
    users?: Array<string>,
    /**
     * Make every user of the mailbox a candidate.
     */
    assignToAnyUser?: boolean,
    /**
     * Ignore users' availability schedules (Emailgistics default: false).
     */
    ignoreAvailability?: boolean,
    /**
     * Ignore each user's max-messages cap (Emailgistics default: true).
     */
    ignoreMaxMessages?: boolean,
    /**
     * Assign if a user becomes available within this many minutes.
     * Must not be negative.
     */
    assignIfUserAvailableWithinMinutes?: bigint,
    /**
     * Automatic-assignment method, as the Emailgistics examples use it
     * (1 or 2). Must not be negative.
     */
    aaMethod?: bigint,
  }
  /**
   * `assign`: assign the message to one user out of a pool.
   */
  export interface AssignAction {
    /**
     * The primary attempt.
     */
    mainAssignment: AssignmentSpec,
    /**
     * Tried in order when the main assignment finds no eligible user.
     */
    backupAssignments?: Array<AssignmentSpec>,
  }
  /**
   * `tag`: apply tags that already exist in the mailbox (case-sensitive).
   */
  export interface TagAction {
    /**
     * Tag names; at least one, none empty.
     */
    tags: Array<string>,
  }
  /**
   * How an inline `sendMessage` body is to be read.
   * # Variants
   * 
   * ## `"html"`
   * 
   * The body is HTML; it may reference inline assets as `cid:<id>`.
   * ## `"text"`
   * 
   * The body is plain text.
   */
  export type BodyType = 'html' | 'text';
  /**
   * An image embedded in an HTML body of an inline `sendMessage`.
   */
  export interface InlineAsset {
    /**
     * Referenced from the body as `cid:<id>`.
     */
    id: string,
    /**
     * File name shown to the recipient.
     */
    filename: string,
    /**
     * MIME type, e.g. `image/png`.
     */
    contentType: string,
    /**
     * The file's bytes, base64-encoded.
     */
    base64Content: string,
  }
  /**
   * `sendMessage`: reply from the mailbox, either from a template
   * (`template-name`) or inline (`body` + `body-type`) — exactly one mode,
   * or the host drops the action, as Emailgistics would.
   */
  export interface SendMessageAction {
    /**
     * Template mode: the name of a template defined in Emailgistics Admin.
     */
    templateName?: string,
    /**
     * Inline mode: the body.
     */
    body?: string,
    /**
     * Inline mode: how to read the body.
     */
    bodyType?: BodyType,
    /**
     * Subject; in template mode it overrides the template's subject.
     */
    subject?: string,
    /**
     * Primary recipients; required, at least one.
     */
    toAddresses: Array<EmailAddress>,
    /**
     * Cc recipients.
     */
    ccAddresses?: Array<EmailAddress>,
    /**
     * Bcc recipients.
     */
    bccAddresses?: Array<EmailAddress>,
    /**
     * Inline mode, HTML body: embedded images.
     */
    inlineAssets?: Array<InlineAsset>,
  }
  /**
   * `forwardMessage`: forward the triggering message.
   */
  export interface ForwardMessageAction {
    /**
     * Recipients; at least one. There is no cc or bcc for a forward.
     */
    toAddresses: Array<EmailAddress>,
    /**
     * Plain-text note placed above the original message.
     */
    comment?: string,
  }
  /**
   * The payload of an action; the case is the action's `type`.
   */
  export type ActionValue = ActionValueAssign | ActionValueTag | ActionValueSetCustomFields | ActionValueSendMessage | ActionValueForwardMessage;
  /**
   * `assign`
   */
  export interface ActionValueAssign {
    tag: 'assign',
    val: AssignAction,
  }
  /**
   * `tag`
   */
  export interface ActionValueTag {
    tag: 'tag',
    val: TagAction,
  }
  /**
   * `setCustomFields`: custom-field key to value. Values longer than
   * 100 Unicode characters are truncated to 100 by the host.
   */
  export interface ActionValueSetCustomFields {
    tag: 'set-custom-fields',
    val: StringMap,
  }
  /**
   * `sendMessage`
   */
  export interface ActionValueSendMessage {
    tag: 'send-message',
    val: SendMessageAction,
  }
  /**
   * `forwardMessage`
   */
  export interface ActionValueForwardMessage {
    tag: 'forward-message',
    val: ForwardMessageAction,
  }
  /**
   * One action for Emailgistics to apply, in order.
   */
  export interface Action {
    /**
     * A free label shown in Emailgistics Admin logs.
     */
    name?: string,
    /**
     * What to do.
     */
    value: ActionValue,
  }
  /**
   * What a plugin returns for a delivery.
   */
  export interface PluginOutput {
    /**
     * Actions, in the order they should be applied.
     */
    actions: Array<Action>,
    /**
     * A short note for the delivery record (not sent to Emailgistics).
     */
    message?: string,
  }
  /**
   * Why a plugin could not handle a delivery. The host skips the plugin's
   * output and records the error.
   */
  export type PluginError = PluginErrorInvalidDelivery | PluginErrorDependency | PluginErrorInternal;
  /**
   * The delivery lacks something this plugin needs.
   */
  export interface PluginErrorInvalidDelivery {
    tag: 'invalid-delivery',
    val: string,
  }
  /**
   * Something the plugin depends on (a host import, its config) failed.
   */
  export interface PluginErrorDependency {
    tag: 'dependency',
    val: string,
  }
  /**
   * Any other failure inside the plugin.
   */
  export interface PluginErrorInternal {
    tag: 'internal',
    val: string,
  }
  /**
   * Why a host import call failed. Never a trap: the plugin decides.
   */
  export type HostError = HostErrorDenied | HostErrorUnavailable | HostErrorInvalid | HostErrorOverLimit;
  /**
   * This plugin was not granted the capability in the host config.
   */
  export interface HostErrorDenied {
    tag: 'denied',
    val: string,
  }
  /**
   * The backend could not answer (down, or out of time).
   */
  export interface HostErrorUnavailable {
    tag: 'unavailable',
    val: string,
  }
  /**
   * The request itself was not acceptable (e.g. an empty key).
   */
  export interface HostErrorInvalid {
    tag: 'invalid',
    val: string,
  }
  /**
   * A budget or quota the host gives this plugin is used up: calls
   * per delivery, kv operations or bytes written per call, the kv
   * namespace's keys or bytes. Retrying within the same call fails
   * the same way; the message names the limit.
   */
  export interface HostErrorOverLimit {
    tag: 'over-limit',
    val: string,
  }
}
