//! The bench baseline (`scripts/bench`, `scripts/bench-storage`): a bare hyper HTTP/1.1
//! server that reads each request body and answers 200 with a fixed JSON
//! body, nothing else. What enrichd does per delivery is measured as a
//! ratio to this, so the figures say what storage and plugins cost on this
//! machine rather than how fast the machine is.
//!
//! Usage: `bare-hyper [ADDR]` (default `127.0.0.1:0`); prints
//! `listening on <addr>` on stdout once bound, serves until killed.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

/// The answer: the shape of an enrichd envelope with no actions.
const BODY: &str = r#"{"status":"success","actions":[]}"#;

async fn answer(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    // Read the body as enrichd does, so both sides pay for the upload.
    let _ = req.into_body().collect().await;
    Ok(Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(BODY.as_bytes())))
        .expect("static response"))
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".to_owned());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on {}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            let service = hyper::service::service_fn(answer);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
