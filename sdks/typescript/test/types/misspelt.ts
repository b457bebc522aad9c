// Compiled by test/package.test.mjs with `tsc --noEmit`: each
// `@ts-expect-error` must meet an error, or the compile fails.
import { EventFlow, verifyWebhook, hasTopic } from "@eventflow/sdk";
import type { WebhookEvent, EventOfType } from "@eventflow/sdk";

export async function route(body: string, headers: Headers): Promise<string> {
  const event = await verifyWebhook({ headers, body }, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
  switch (event.type) {
    case "appointment.created":
      // The record's fields are typed by the event type.
      return event.data?.start ?? "";
    // @ts-expect-error — a misspelt event type is no case of the union.
    case "appointment.craeted":
      return "";
    case "patient.updated":
      // @ts-expect-error — a misspelt field of the patient.
      return event.data?.firstNmae ?? "";
    default:
      return event.type;
  }
}

export function topics(event: WebhookEvent): string | undefined {
  if (hasTopic(event, "appointment.cancelled")) {
    // Narrowed to the appointment events that can be cancelled.
    return event.data?.status ?? undefined;
  }
  // @ts-expect-error — no such topic.
  hasTopic(event, "appointment.canceled");
  return undefined;
}

export async function client(c: EventFlow): Promise<void> {
  const appt = await c.appointments.create({ patientId: "pat_1", start: "2030-01-01T10:00:00Z" });
  appt.start.toUpperCase();
  // @ts-expect-error — a misspelt field in what is created.
  await c.appointments.create({ patientId: "pat_1", strat: "2030-01-01T10:00:00Z" });
  // @ts-expect-error — a required field left out.
  await c.patients.create({ firstName: "Ada" });
  // @ts-expect-error — no such collection.
  c.appointmnets.list();
  await c.events.list({ types: ["appointment.*", "appointment.cancelled"] });
  const created: EventOfType<"lab.created">["resource"]["type"] = "lab";
  void created;
}
