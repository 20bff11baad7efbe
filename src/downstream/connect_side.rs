//! A Connect call's side of an exchange, shared by the HTTP/1.1 and HTTP/2 ones: its request
//! body translation, its reply, and what it answered (for the access log and the connection).

use bytes::Bytes;

use crate::connect::adapter::{Reply, ReplyOut, RequestBody};
use crate::error::Error;
use crate::status::Code;

/// A Connect call's side of the exchange: its request body translation and its reply.
pub(crate) struct ConnectSide {
    pub body: RequestBody,
    pub reply: Reply,
    /// The response's end, decided when the upstream's bytes broke the call.
    decided: Option<ReplyOut>,
    /// The response's status, and the Connect code written, for the access log.
    pub http_status: u16,
    pub code: Code,
    /// The body was cut off without its last chunk: the connection must close.
    pub aborted: bool,
}

impl ConnectSide {
    pub fn new(body: RequestBody, reply: Reply) -> Self {
        ConnectSide {
            body,
            reply,
            decided: None,
            http_status: 200,
            code: Code::Ok,
            aborted: false,
        }
    }
}

impl ConnectSide {
    /// The upstream's response bytes through the reply; an error (the bytes broke the call)
    /// keeps the response's end for [`Self::fail`] and stops the call.
    pub fn data(&mut self, data: Bytes) -> Result<ReplyOut, Error> {
        self.reply.data(data).map_err(|end| {
            self.decided = Some(end);
            Error::UpstreamProtocol(
                "the upstream's response cannot be carried by the Connect protocol",
            )
        })
    }

    /// How the call's failure is answered: the end decided by the upstream's bytes, else a
    /// Connect error for `error` (a Connect client reads every failure as one).
    pub fn fail(&mut self, error: &Error, head_sent: bool) -> ReplyOut {
        match self.decided.take() {
            Some(decided) => decided,
            None => self.reply.failed(error.code(), &error.message(), head_sent),
        }
    }
}
