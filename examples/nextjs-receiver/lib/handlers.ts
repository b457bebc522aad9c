// What the receiver does with each event. These only record what arrived
// (ids and types: never patient data in logs); put your SMS, billing or
// care-team code here.
import type {
  AppointmentCreatedEvent,
  EncounterUpdatedEvent,
  ObservationCreatedEvent,
  PatientCreatedEvent,
  PrescriptionCreatedEvent,
} from "@eventflow/sdk";

function note(what: string, id: string): void {
  console.log(`${new Date().toISOString()} ${what} ${id}`);
}

export async function handleAppointmentCreated(event: AppointmentCreatedEvent): Promise<void> {
  // e.g. send the confirmation SMS to event.data.patientPhone for event.data.start.
  note("appointment booked", event.resource.id);
}

export async function handleEncounterUpdated(event: EncounterUpdatedEvent): Promise<void> {
  // The visit finished: make the billing claim.
  if (event.changedFields.includes("status") && event.data?.status === "finished") {
    note("encounter finished", event.resource.id);
  }
}

export async function handleObservationCreated(event: ObservationCreatedEvent): Promise<void> {
  if (event.topics.includes("observation.critical")) note("critical result", event.resource.id);
}

export async function handlePatientCreated(event: PatientCreatedEvent): Promise<void> {
  note("new patient", event.resource.id);
}

export async function handlePrescriptionCreated(event: PrescriptionCreatedEvent): Promise<void> {
  note("prescription written", event.resource.id);
}
