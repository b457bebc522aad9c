import type { Topic, TopicEvents, WebhookEvent } from "./generated.js";

/**
 * Whether the event carries a clinical topic; narrows it to the event types
 * that can: `if (hasTopic(event, "appointment.cancelled")) event.data?.status`.
 */
export function hasTopic<T extends Topic>(event: WebhookEvent, topic: T): event is TopicEvents[T] {
  return (event.topics as readonly string[]).includes(topic);
}
