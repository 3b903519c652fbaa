//! The S3 listener: actix-web's HTTP/1 service over connections wrapped in [`GuardedStream`],
//! so request heads the HTTP layer would refuse with a bare status are answered in S3 XML; and
//! the log filter that turns the HTTP layer's per-connection ERROR lines about client mistakes
//! into rate-limited WARN lines ([`ClientNoise`]).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix_http::error::DispatchError;
use actix_http::{HttpService, KeepAlive};
use actix_server::Server;
use actix_service::{fn_service, map_config, ServiceFactoryExt};
use actix_web::dev::AppConfig;
use actix_web::rt::net::TcpStream;
use actix_web::{web, App};
use hamster_actors::s3::guard::GuardedStream;
use hamster_actors::s3::noise::ClientNoise;
use hamster_actors::s3::{self, S3State};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// How long a client may take to send a request head.
const CLIENT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How long an idle keep-alive connection stays open.
const KEEP_ALIVE: Duration = Duration::from_secs(5);
/// How long a closing connection waits for the client to hang up.
const CLIENT_DISCONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Builds (without starting) the S3 server on `sock` for `state`.
pub fn server(
    sock: SocketAddr,
    state: Arc<S3State>,
    shutdown_grace_secs: u64,
) -> std::io::Result<Server> {
    let builder = Server::build()
        .disable_signals()
        .shutdown_timeout(shutdown_grace_secs)
        .bind("hamster-s3", sock, move || {
            let ids = state.ids.clone();
            let app = App::new()
                .app_data(web::Data::new(state.clone()))
                .configure(s3::configure);
            let http = HttpService::build()
                .keep_alive(KeepAlive::Timeout(KEEP_ALIVE))
                .client_request_timeout(CLIENT_REQUEST_TIMEOUT)
                .client_disconnect_timeout(CLIENT_DISCONNECT_TIMEOUT)
                .local_addr(sock)
                .h1(map_config(app, |_| AppConfig::default()));
            fn_service(move |io: TcpStream| {
                let ids = ids.clone();
                async move {
                    // Without TCP_NODELAY a small response's body waits for the client's
                    // delayed ACK after the head (about 40 ms per small GET).
                    let _ = io.set_nodelay(true);
                    let peer = io.peer_addr().ok();
                    Ok::<_, DispatchError>((GuardedStream::new(io, ids), peer))
                }
            })
            .and_then(http)
        })?;
    Ok(builder.run())
}

/// A tracing layer that holds back the HTTP layer's ERROR lines about connections that clients
/// broke (malformed heads, resets, slow or abandoned requests) and counts them in
/// [`ClientNoise`], which reports them at WARN at a bounded rate. Anything else passes.
#[derive(Debug, Clone, Copy, Default)]
pub struct HttpLayerNoise;

impl<S: Subscriber> Layer<S> for HttpLayerNoise {
    fn event_enabled(&self, event: &Event<'_>, _cx: Context<'_, S>) -> bool {
        let meta = event.metadata();
        if *meta.level() != Level::ERROR || !meta.target().starts_with("actix_http::h1") {
            return true;
        }
        let mut text = Message::default();
        event.record(&mut text);
        match client_caused(&text.0) {
            Some(kind) => {
                // Inside the logging system no new event can be emitted: count it only.
                ClientNoise::global().note(kind, &text.0);
                false
            }
            None => true,
        }
    }
}

/// The kind of client mistake an HTTP-layer error line reports, if it is one.
fn client_caused(message: &str) -> Option<&'static str> {
    let m = message.strip_prefix("stream error: ")?;
    if m.starts_with("request parse error") {
        Some("malformed-request")
    } else if m.starts_with("I/O error") {
        Some("connection-error")
    } else if m.starts_with("request did not complete") {
        Some("slow-request-head")
    } else if m.starts_with("connection shutdown timeout")
        || m.starts_with("handler dropped payload")
    {
        Some("abandoned-request")
    } else {
        None
    }
}

#[derive(Default)]
struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_mistakes_are_recognised_and_server_faults_are_not() {
        assert_eq!(
            client_caused("stream error: request parse error: invalid Header provided"),
            Some("malformed-request")
        );
        assert_eq!(
            client_caused("stream error: I/O error: Connection reset by peer (os error 104)"),
            Some("connection-error")
        );
        assert_eq!(client_caused("stream error: body error: boom"), None);
        assert_eq!(client_caused("Response payload stream error: x"), None);
    }
}
