//! The built-in services' handlers (their declarations are `tabmesh_core::services::builtin`).

use futures::FutureExt;
use futures::future::LocalBoxFuture;
use serde_json::Value;
use tabmesh_core::gimps::pace::SearchPace;
use tabmesh_core::services::builtin::{
    ECHO, LUCAS_LEHMER, NODE_INFO, exponent, lucas_lehmer_reply,
};
use web_time::Instant;

use crate::platform;

/// Answers a call of built-in service `service` (its data checked against the declaration
/// already); `status` is what `node-info` answers.
pub(super) fn run(
    service: &str,
    data: &Value,
    status: &Value,
) -> LocalBoxFuture<'static, Result<Value, String>> {
    match service {
        LUCAS_LEHMER => match exponent(data) {
            Some(p) => {
                let started = Instant::now();
                // A caller waits for the answer: full speed, whatever the search's pace.
                platform::lucas_lehmer(p, platform::SharedPace::new(SearchPace::FULL))
                    .map(move |is_prime| {
                        let ms = started.elapsed().as_secs_f64() * 1000.0;
                        Ok(lucas_lehmer_reply(p, is_prime, ms))
                    })
                    .boxed_local()
            }
            None => async { Err("no exponent".to_owned()) }.boxed_local(),
        },
        ECHO => {
            let data = data.clone();
            async move { Ok(data) }.boxed_local()
        }
        NODE_INFO => {
            let status = status.clone();
            async move { Ok(status) }.boxed_local()
        }
        other => {
            let other = other.to_owned();
            async move { Err(format!("no built-in service {other}")) }.boxed_local()
        }
    }
}
