// POST /api/webhooks: Event Flow's deliveries. The SDK checks the signature
// (401 if it is not the server's, or is stale), answers the endpoint
// verification challenge by itself, and hands over the event typed by its
// `type`.
import { handleWebhook } from "@eventflow/sdk";
import {
  handleAppointmentCreated,
  handleEncounterUpdated,
  handleObservationCreated,
  handlePatientCreated,
  handlePrescriptionCreated,
} from "../../../lib/handlers";

export async function POST(req: Request): Promise<Response> {
  // The endpoint's secret (`whsec_…`), from `GET /v1/endpoints/{id}/secret`.
  // During a rotation, pass both: [process.env.WEBHOOK_SECRET!, process.env.WEBHOOK_SECRET_OLD!].
  return handleWebhook(req, process.env.WEBHOOK_SECRET!, async (event) => {
    // Route events to handlers; `event.data` is typed by `event.type`.
    switch (event.type) {
      case "appointment.created":
        await handleAppointmentCreated(event);
        break;
      case "encounter.updated":
        await handleEncounterUpdated(event);
        break;
      case "observation.created":
        await handleObservationCreated(event);
        break;
      case "patient.created":
        await handlePatientCreated(event);
        break;
      case "prescription.created":
        await handlePrescriptionCreated(event);
        break;
    }
    // Answer quickly: do slow work after answering (a queue), or the
    // delivery times out and is retried. Deliveries of one event share its
    // `id`: deduplicate on it.
    return Response.json({ received: true });
  });
}
