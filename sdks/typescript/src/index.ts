// Event Flow for TypeScript: verify and type the webhooks the server sends,
// and call its API. No runtime dependencies: the Fetch API and Web Crypto.
export * from "./generated.js";
export {
  CHALLENGE_TYPE,
  DEFAULT_TOLERANCE_SECONDS,
  WebhookVerificationError,
  challengeResponse,
  handleWebhook,
  isChallenge,
  verifyWebhook,
} from "./webhooks.js";
export type {
  HeadersLike,
  VerificationChallenge,
  VerificationFailure,
  VerifyOptions,
  WebhookPayload,
  WebhookRequest,
  WebhookSecret,
} from "./webhooks.js";
export { Collection, Endpoints, EventFlow, EventFlowError, Events } from "./client.js";
export type {
  ClientOptions,
  EndpointSecret,
  EventsListOptions,
  EventsPage,
  GetOptions,
  ListOptions,
  Page,
  StreamOptions,
  UpdateOptions,
  CreateOptions,
} from "./client.js";
export { hasTopic } from "./topics.js";
