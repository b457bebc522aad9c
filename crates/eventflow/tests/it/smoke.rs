use eventflow_testkit::{Backend, backend_tests};
use serde_json::json;

backend_tests!(a_created_patient_can_be_read_back);

async fn a_created_patient_can_be_read_back(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let id = api
        .create(
            "patients",
            json!({"firstName": "Ada", "lastName": "Lovelace"}),
        )
        .await;
    let r = api.get(&format!("/v1/patients/{id}")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["firstName"], "Ada");
    assert_eq!(r.header("etag"), Some("\"1\""));
}
