//! Building S3 responses: the common headers every answer carries and the XML error body,
//! rendered from the one `S3ErrorCode` mapping.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, HttpResponseBuilder};
use hamster_protocol::s3err::S3Error;
use hamster_protocol::xml;

/// Per-request facts echoed in every response.
#[derive(Debug, Clone)]
pub struct Echo {
    /// The request id (also in error bodies and logs).
    pub request_id: String,
    /// The resource path as requested, for `<Resource>`.
    pub resource: String,
    /// HEAD answers carry no body, errors included.
    pub head: bool,
}

/// A response builder with the headers every S3 answer carries.
pub fn builder(status: StatusCode, echo: &Echo) -> HttpResponseBuilder {
    let mut b = HttpResponse::build(status);
    b.insert_header(("x-amz-request-id", echo.request_id.as_str()))
        .insert_header(("x-amz-id-2", echo.request_id.as_str()))
        .insert_header(("server", "Hamster"));
    b
}

/// A 200 with an XML body.
pub fn xml_ok(echo: &Echo, body: String) -> HttpResponse {
    builder(StatusCode::OK, echo)
        .content_type("application/xml")
        .body(body)
}

/// Seconds a 503 asks the client to wait before it tries again.
const RETRY_AFTER_SECS: &str = "1";

/// The S3 error answer: status from the code, XML body (none for HEAD).
pub fn error(echo: &Echo, err: &S3Error, extra: &[(&str, &str)]) -> HttpResponse {
    let status =
        StatusCode::from_u16(err.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut b = builder(status, echo);
    if status == StatusCode::SERVICE_UNAVAILABLE {
        // Every 503 here is a passing condition (no leader yet, nodes down, a full queue):
        // clients that honour the header come back after a second instead of hammering.
        b.insert_header(("retry-after", RETRY_AFTER_SECS));
    }
    if echo.head || status == StatusCode::NOT_MODIFIED {
        return b.finish();
    }
    let body = xml::error_xml(
        err.code.code(),
        err.message(),
        &echo.resource,
        &echo.request_id,
        extra,
    );
    b.content_type("application/xml").body(body)
}
