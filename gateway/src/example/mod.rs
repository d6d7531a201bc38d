//! The example gateway (`costpipe-gateway-example`) and the stub provider
//! (`costpipe-stub-provider`): axum shells around the pure client in `crate::core`.

pub mod gateway;
pub mod openai;
pub mod stub;
pub mod telemetry;
