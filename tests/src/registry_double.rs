//! A minimal in-process implementation of the two Confluent Schema Registry REST calls
//! costpipe makes (`POST /subjects/{subject}/versions`, `GET /schemas/ids/{id}`). No
//! Confluent-compatible registry can be installed on these machines (Confluent's needs a JVM
//! image, Karapace is not on PyPI), so the registry tests speak the protocol to this.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

#[derive(Default)]
struct Schemas {
    by_id: HashMap<u32, String>,
    next_id: u32,
}

type Shared = Arc<Mutex<Schemas>>;

async fn register(
    State(s): State<Shared>,
    Path(_subject): Path<String>,
    Json(body): Json<Value>,
) -> Json<Value> {
    let schema = body["schema"].as_str().unwrap_or_default().to_string();
    let mut s = s.lock().expect("lock");
    if let Some((&id, _)) = s.by_id.iter().find(|(_, text)| **text == schema) {
        return Json(json!({ "id": id }));
    }
    let id = s.next_id;
    s.next_id += 1;
    s.by_id.insert(id, schema);
    Json(json!({ "id": id }))
}

async fn by_id(
    State(s): State<Shared>,
    Path(id): Path<u32>,
) -> Result<Json<Value>, (StatusCode, Json<Value>)> {
    match s.lock().expect("lock").by_id.get(&id) {
        Some(text) => Ok(Json(json!({ "schema": text }))),
        None => Err((
            StatusCode::NOT_FOUND,
            Json(json!({ "error_code": 40403, "message": "Schema not found" })),
        )),
    }
}

/// Starts the registry on a free port; ids are assigned from `first_id`.
pub async fn start(first_id: u32) -> SocketAddr {
    let state: Shared = Arc::new(Mutex::new(Schemas {
        by_id: HashMap::new(),
        next_id: first_id,
    }));
    let app = Router::new()
        .route("/subjects/{subject}/versions", post(register))
        .route("/schemas/ids/{id}", get(by_id))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}
