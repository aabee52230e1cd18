//! RESP2, the Redis serialization protocol, as `tokio_util` codecs.
//!
//! [`RespCodec`] is the server side: it decodes requests into their words (`Vec<Bytes>`) and
//! encodes [`Reply`]s. Requests come in the two shapes Redis accepts:
//!
//! - an array of bulk strings, `*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`, which is what `redis-cli`,
//!   `redis-benchmark` and client libraries send, often many per read (pipelining);
//! - an inline command, `GET k\r\n`, a line of words as typed into telnet. Words are split the way
//!   Redis's `sdssplitargs` does, so `"double"` and `'single'` quotes (with `\xHH`, `\n`, ... escapes
//!   inside double quotes) work. A bare `\n` also ends the line, as in Redis, for `nc` users.
//!
//! Empty requests (`*0`, the null array `*-1`, blank lines) carry no command and are skipped, as
//! Redis does. Everything else that does not parse is a [`RespError`]; the server should send
//! [`RespError::to_reply`] and close the connection, since the stream can no longer be framed.
//!
//! Every length is checked against [`RespLimits`] as soon as its header arrives, before the bytes it
//! announces are buffered, so one connection can hold at most about
//! [`RespLimits::max_request_len`] bytes of a request.
//!
//! [`RespClientCodec`] is the client side (requests out, replies in), for tests and tools.

use crate::parse_integer;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use thiserror::Error;
use tokio_util::codec::{Decoder, Encoder};

/// Bounds on what a peer may make us buffer. The defaults follow Redis where it has a setting
/// (`proto-max-bulk-len` is 512 MiB there; a replicated value travels through the Raft log and
/// every replica's memory, so 64 MiB here).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RespLimits {
    /// Longest bulk string, in bytes.
    pub max_bulk_len: usize,
    /// Most elements in one request array (Redis: 1,048,576).
    pub max_array_len: usize,
    /// Longest inline command line, without its line ending (Redis: 64 KiB). The client codec
    /// applies it to simple-string and error lines.
    pub max_inline_len: usize,
    /// Most bytes of one whole request, headers included (Redis's `client-query-buffer-limit`
    /// plays this role).
    pub max_request_len: usize,
    /// Deepest array nesting the client codec accepts in a reply; requests are never nested.
    pub max_reply_depth: usize,
}

impl Default for RespLimits {
    fn default() -> Self {
        RespLimits {
            max_bulk_len: 64 * 1024 * 1024,
            max_array_len: 1024 * 1024,
            max_inline_len: 64 * 1024,
            max_request_len: 256 * 1024 * 1024,
            max_reply_depth: 32,
        }
    }
}

/// A partial request this small is not charged to the [`BufferBudget`]: every connection's read
/// buffer starts this large anyway, so it costs nothing more, and an ordinary pipeline cut
/// between two reads is never refused because stalled large requests spent the budget.
pub const UNCHARGED_PARTIAL_BYTES: usize = 8 * 1024;

/// A byte budget shared by every connection of a server: the bytes held for requests that have
/// started to arrive but are not complete. One connection is bounded by
/// [`RespLimits::max_request_len`]; this bounds them all together, so many stalled large
/// requests cannot take the node's memory.
#[derive(Debug)]
pub struct BufferBudget {
    limit: usize,
    in_use: AtomicUsize,
}

impl BufferBudget {
    pub fn new(limit: usize) -> Arc<BufferBudget> {
        Arc::new(BufferBudget {
            limit,
            in_use: AtomicUsize::new(0),
        })
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes taken now.
    pub fn in_use(&self) -> usize {
        self.in_use.load(Ordering::Relaxed)
    }

    /// Takes `bytes` if they fit under the limit.
    fn try_take(&self, bytes: usize) -> bool {
        self.in_use
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|&total| total <= self.limit)
            })
            .is_ok()
    }

    fn give_back(&self, bytes: usize) {
        self.in_use.fetch_sub(bytes, Ordering::AcqRel);
    }
}

/// Why a byte stream could not be decoded. The messages follow Redis's `Protocol error: ...`
/// wording where Redis has one.
#[derive(Debug, Error)]
pub enum RespError {
    #[error("Protocol error: expected '{}', got '{}'", .expected.escape_ascii(), .found.escape_ascii())]
    UnexpectedType { expected: u8, found: u8 },
    #[error("Protocol error: unknown reply type '{}'", .0.escape_ascii())]
    UnknownReplyType(u8),
    #[error("Protocol error: invalid multibulk length")]
    InvalidArrayLength,
    #[error("Protocol error: invalid bulk length")]
    InvalidBulkLength,
    #[error("Protocol error: invalid integer")]
    InvalidInteger,
    #[error("Protocol error: negative length {0}")]
    NegativeLength(i64),
    /// `$-1` inside a request: a command word cannot be null (Redis refuses it too).
    #[error("Protocol error: null bulk string in a request")]
    NullBulkInRequest,
    #[error("Protocol error: expected CRLF")]
    MissingCrlf,
    #[error("Protocol error: bulk length {len} exceeds the limit of {max} bytes")]
    BulkTooLong { len: u64, max: usize },
    #[error("Protocol error: multibulk length {len} exceeds the limit of {max} elements")]
    ArrayTooLong { len: u64, max: usize },
    #[error("Protocol error: too big inline request (limit {max} bytes)")]
    InlineTooLong { max: usize },
    #[error("Protocol error: request exceeds the limit of {max} bytes")]
    RequestTooLong { max: usize },
    #[error("Protocol error: unbalanced quotes in request")]
    UnbalancedQuotes,
    #[error("Protocol error: reply nested deeper than {max} levels")]
    ReplyTooDeep { max: usize },
    #[error("Protocol error: connection closed in the middle of a request")]
    UnexpectedEof,
    /// The server-wide [`BufferBudget`] for partially received requests is spent: the request is
    /// refused (and the connection closed) rather than buffered.
    #[error("server busy: partially received requests already hold the server's buffer budget of {limit} bytes; retry later")]
    BudgetExhausted { limit: usize },
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
}

impl RespError {
    /// The error reply to send before closing the connection.
    pub fn to_reply(&self) -> Reply {
        Reply::Error(format!("ERR {self}"))
    }
}

/// A RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+text`; CR and LF are sent as spaces so the text cannot break the framing.
    Simple(String),
    /// `-text`, conventionally starting with an upper-case code such as `ERR`; CR and LF are sent
    /// as spaces.
    Error(String),
    /// `:n`
    Integer(i64),
    /// `$len` and the bytes; `None` is the null bulk string `$-1`.
    Bulk(Option<Bytes>),
    /// `*n` and the elements; `None` is the null array `*-1`.
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// `+OK`
    pub fn ok() -> Reply {
        Reply::Simple("OK".to_owned())
    }

    /// A bulk string holding `data`.
    pub fn bulk(data: impl Into<Bytes>) -> Reply {
        Reply::Bulk(Some(data.into()))
    }

    /// The null bulk string, Redis's "no such key".
    pub fn null() -> Reply {
        Reply::Bulk(None)
    }

    /// An array of `items`.
    pub fn array(items: Vec<Reply>) -> Reply {
        Reply::Array(Some(items))
    }
}

/// Appends `reply` to `dst` in RESP2.
pub fn encode_reply(reply: &Reply, dst: &mut BytesMut) {
    match reply {
        Reply::Simple(text) => put_text_line(dst, b'+', text),
        Reply::Error(text) => put_text_line(dst, b'-', text),
        Reply::Integer(n) => put_integer_line(dst, b':', *n),
        Reply::Bulk(None) => dst.extend_from_slice(b"$-1\r\n"),
        Reply::Bulk(Some(data)) => {
            put_length_line(dst, b'$', data.len());
            dst.reserve(data.len() + 2);
            dst.extend_from_slice(data);
            dst.extend_from_slice(b"\r\n");
        }
        Reply::Array(None) => dst.extend_from_slice(b"*-1\r\n"),
        Reply::Array(Some(items)) => {
            put_length_line(dst, b'*', items.len());
            for item in items {
                encode_reply(item, dst);
            }
        }
    }
}

/// How many bytes [`encode_reply`] appends for `reply`.
pub fn encoded_len(reply: &Reply) -> usize {
    // Type byte, digits, CRLF.
    let line = |n: usize| 1 + decimal_digits(n as u64) + 2;
    match reply {
        Reply::Simple(text) | Reply::Error(text) => text.len() + 3,
        Reply::Integer(n) => 3 + usize::from(*n < 0) + decimal_digits(n.unsigned_abs()),
        Reply::Bulk(None) | Reply::Array(None) => 5,
        Reply::Bulk(Some(data)) => bulk_encoded_len(data.len()),
        Reply::Array(Some(items)) => {
            line(items.len()) + items.iter().map(encoded_len).sum::<usize>()
        }
    }
}

/// Encoded length of a bulk string of `len` bytes: `$len\r\n`, the bytes, `\r\n`.
pub fn bulk_encoded_len(len: usize) -> usize {
    1 + decimal_digits(len as u64) + 2 + len + 2
}

fn decimal_digits(mut n: u64) -> usize {
    let mut digits = 1;
    while n >= 10 {
        n /= 10;
        digits += 1;
    }
    digits
}

/// Appends a request, an array of bulk strings, to `dst`: what a client sends.
pub fn encode_request<T: AsRef<[u8]>>(words: &[T], dst: &mut BytesMut) {
    put_length_line(dst, b'*', words.len());
    for word in words {
        let word = word.as_ref();
        put_length_line(dst, b'$', word.len());
        dst.extend_from_slice(word);
        dst.extend_from_slice(b"\r\n");
    }
}

fn put_text_line(dst: &mut BytesMut, prefix: u8, text: &str) {
    dst.reserve(text.len() + 3);
    dst.put_u8(prefix);
    dst.extend(text.bytes().map(|byte| match byte {
        b'\r' | b'\n' => b' ',
        other => other,
    }));
    dst.extend_from_slice(b"\r\n");
}

fn put_integer_line(dst: &mut BytesMut, prefix: u8, n: i64) {
    dst.put_u8(prefix);
    if n < 0 {
        dst.put_u8(b'-');
    }
    put_decimal(dst, n.unsigned_abs());
    dst.extend_from_slice(b"\r\n");
}

fn put_length_line(dst: &mut BytesMut, prefix: u8, len: usize) {
    dst.put_u8(prefix);
    // usize is at most 64 bits on every platform Rust supports.
    put_decimal(dst, len as u64);
    dst.extend_from_slice(b"\r\n");
}

/// Writes `n` in decimal without going through `fmt`, which matters on the reply hot path.
fn put_decimal(dst: &mut BytesMut, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    dst.extend_from_slice(&digits[start..]);
}

/// Longest integer a length or integer line may hold: `-` and the 19 digits of `i64::MIN`.
const MAX_INTEGER_DIGITS: usize = 20;

/// Elements preallocated for an array whose header announces more: the header alone must not make
/// us allocate memory the peer never sends.
const MAX_PREALLOCATED_ELEMENTS: usize = 1024;

/// Most bytes reserved ahead of a bulk string's data on the strength of its header alone: the
/// header is the peer's word, the data is what it actually sent.
const MAX_EAGER_RESERVE: usize = 64 * 1024;

/// Parses `<type byte><integer>\r\n` at the start of `buf` (which must not be empty). Returns the
/// integer and the line's length, or `None` when the line is not complete yet. Fails as soon as a
/// byte cannot belong to an integer, so a garbage header is never buffered.
fn parse_integer_line(
    buf: &[u8],
    invalid: fn() -> RespError,
) -> Result<Option<(i64, usize)>, RespError> {
    let body = buf.get(1..).unwrap_or_default();
    for (i, &byte) in body.iter().enumerate() {
        match byte {
            b'\r' => {
                return match body.get(i + 1) {
                    None => Ok(None),
                    Some(b'\n') => {
                        let value = parse_integer(&body[..i]).ok_or_else(invalid)?;
                        Ok(Some((value, i + 3)))
                    }
                    Some(_) => Err(RespError::MissingCrlf),
                };
            }
            b'\n' => return Err(RespError::MissingCrlf),
            b'-' | b'0'..=b'9' if i < MAX_INTEGER_DIGITS => {}
            _ => return Err(invalid()),
        }
    }
    Ok(None)
}

/// The server side of a connection: decodes requests into their words, encodes [`Reply`]s.
#[derive(Debug, Default)]
pub struct RespCodec {
    limits: RespLimits,
    /// The array request being received, kept between calls so that its finished elements are not
    /// parsed again (a large pipelined request arrives over many reads).
    partial: Option<PartialRequest>,
    /// The server-wide budget the partial request is charged to, if any.
    budget: Option<Arc<BufferBudget>>,
    /// Bytes of `budget` this codec holds for `partial`.
    charged: usize,
}

#[derive(Debug)]
struct PartialRequest {
    /// Elements still to come.
    remaining: usize,
    words: Vec<Bytes>,
    /// Bytes of this request consumed from the buffer so far.
    consumed: usize,
    /// Length of the bulk string whose header has been consumed but whose data has not.
    pending_bulk: Option<usize>,
}

/// How the first bytes of a new request were handled.
enum Start {
    Incomplete,
    /// An empty request (`*0`, `*-1`, a blank line): nothing to hand out.
    Empty,
    Inline(Vec<Bytes>),
    Array(PartialRequest),
}

impl RespLimits {
    /// A bulk string header's length, checked: not negative (the null bulk, -1, is the caller's
    /// business) and within `max_bulk_len`.
    fn bulk_len(&self, len: i64) -> Result<usize, RespError> {
        if len < 0 {
            return Err(RespError::NegativeLength(len));
        }
        let max = self.max_bulk_len;
        usize::try_from(len)
            .ok()
            .filter(|&len| len <= max)
            .ok_or(RespError::BulkTooLong {
                len: len.unsigned_abs(),
                max,
            })
    }

    /// An array header's element count, checked: not negative (the null array, -1, is the
    /// caller's business) and within `max_array_len`.
    fn array_len(&self, count: i64) -> Result<usize, RespError> {
        if count < 0 {
            return Err(RespError::NegativeLength(count));
        }
        let max = self.max_array_len;
        usize::try_from(count)
            .ok()
            .filter(|&count| count <= max)
            .ok_or(RespError::ArrayTooLong {
                len: count.unsigned_abs(),
                max,
            })
    }
}

impl RespCodec {
    pub fn new(limits: RespLimits) -> Self {
        RespCodec {
            limits,
            partial: None,
            budget: None,
            charged: 0,
        }
    }

    /// A codec whose partially received requests are charged to `budget`: a request that would
    /// take more than is left fails with [`RespError::BudgetExhausted`] before its bytes are
    /// buffered.
    pub fn with_budget(limits: RespLimits, budget: Arc<BufferBudget>) -> Self {
        RespCodec {
            limits,
            partial: None,
            budget: Some(budget),
            charged: 0,
        }
    }

    pub fn limits(&self) -> &RespLimits {
        &self.limits
    }

    /// Whether a request has started to arrive and is not complete yet (bytes still in the read
    /// buffer also count; the caller sees those).
    pub fn in_progress(&self) -> bool {
        self.partial.is_some()
    }

    /// Bytes this codec holds of the shared budget now.
    pub fn charged(&self) -> usize {
        self.charged
    }

    /// Makes sure `bytes` of the budget are held for the partial request (more is never
    /// returned until the request ends).
    fn charge(&mut self, bytes: usize) -> Result<(), RespError> {
        let Some(budget) = &self.budget else {
            return Ok(());
        };
        if bytes <= self.charged || (self.charged == 0 && bytes <= UNCHARGED_PARTIAL_BYTES) {
            return Ok(());
        }
        let more = bytes - self.charged;
        if !budget.try_take(more) {
            return Err(RespError::BudgetExhausted {
                limit: budget.limit(),
            });
        }
        self.charged = bytes;
        Ok(())
    }

    /// Gives the budget held for a finished (or abandoned) request back.
    fn release(&mut self) {
        if let Some(budget) = &self.budget {
            if self.charged > 0 {
                budget.give_back(self.charged);
            }
        }
        self.charged = 0;
    }

    fn decode_request(&mut self, buf: &mut BytesMut) -> Result<Option<Vec<Bytes>>, RespError> {
        loop {
            let mut partial = match self.partial.take() {
                Some(partial) => partial,
                None => match self.start_request(buf)? {
                    Start::Incomplete => return Ok(None),
                    Start::Empty => continue,
                    Start::Inline(words) => return Ok(Some(words)),
                    Start::Array(partial) => partial,
                },
            };
            if self.fill_array(&mut partial, buf)? {
                self.release();
                return Ok(Some(partial.words));
            }
            self.partial = Some(partial);
            return Ok(None);
        }
    }

    fn start_request(&self, buf: &mut BytesMut) -> Result<Start, RespError> {
        let Some(&first) = buf.first() else {
            return Ok(Start::Incomplete);
        };
        if first != b'*' {
            return self.decode_inline(buf);
        }
        let Some((count, header_len)) = parse_integer_line(buf, || RespError::InvalidArrayLength)?
        else {
            return Ok(Start::Incomplete);
        };
        let count = match count {
            -1 | 0 => {
                buf.advance(header_len);
                return Ok(Start::Empty);
            }
            other => self.limits.array_len(other)?,
        };
        buf.advance(header_len);
        Ok(Start::Array(PartialRequest {
            remaining: count,
            words: Vec::with_capacity(count.min(MAX_PREALLOCATED_ELEMENTS)),
            consumed: header_len,
            pending_bulk: None,
        }))
    }

    /// Consumes as many elements of `partial` as `buf` holds; returns whether it is complete.
    fn fill_array(
        &mut self,
        partial: &mut PartialRequest,
        buf: &mut BytesMut,
    ) -> Result<bool, RespError> {
        while partial.remaining > 0 {
            let len = match partial.pending_bulk {
                Some(len) => len,
                None => {
                    let Some(len) = self.read_bulk_header(partial, buf)? else {
                        // The words received so far (and the header's first bytes) stay held.
                        self.charge(partial.consumed.saturating_add(buf.len()))?;
                        return Ok(false);
                    };
                    len
                }
            };
            let framed_len = len + 2;
            if buf.len() < framed_len {
                // Catch a missing terminator as soon as its first byte is here.
                if buf.len() > len && buf[len] != b'\r' {
                    return Err(RespError::MissingCrlf);
                }
                // Everything this request will hold once the string is in, charged before the
                // room is made: a refused request never gets its buffer.
                self.charge(partial.consumed.saturating_add(framed_len))?;
                // The header told us how much is coming: make room for it in steps of at most
                // MAX_EAGER_RESERVE, so a few header bytes cannot make us allocate megabytes the
                // peer never sends (the buffer's own doubling keeps large values linear).
                buf.reserve((framed_len - buf.len()).min(MAX_EAGER_RESERVE));
                return Ok(false);
            }
            if &buf[len..framed_len] != b"\r\n" {
                return Err(RespError::MissingCrlf);
            }
            let word = buf.split_to(len).freeze();
            buf.advance(2);
            partial.words.push(word);
            partial.consumed += framed_len;
            partial.remaining -= 1;
            partial.pending_bulk = None;
        }
        Ok(true)
    }

    /// Consumes a `$len\r\n` header and records it in `partial`, checking every limit before the
    /// data is buffered. Returns `None` when the header is not complete yet.
    fn read_bulk_header(
        &self,
        partial: &mut PartialRequest,
        buf: &mut BytesMut,
    ) -> Result<Option<usize>, RespError> {
        let Some(&first) = buf.first() else {
            return Ok(None);
        };
        if first != b'$' {
            return Err(RespError::UnexpectedType {
                expected: b'$',
                found: first,
            });
        }
        let Some((len, header_len)) = parse_integer_line(buf, || RespError::InvalidBulkLength)?
        else {
            return Ok(None);
        };
        let len = match len {
            -1 => return Err(RespError::NullBulkInRequest),
            other => self.limits.bulk_len(other)?,
        };
        let request_len = partial
            .consumed
            .saturating_add(header_len)
            .saturating_add(len)
            .saturating_add(2);
        if request_len > self.limits.max_request_len {
            return Err(RespError::RequestTooLong {
                max: self.limits.max_request_len,
            });
        }
        buf.advance(header_len);
        partial.consumed += header_len;
        partial.pending_bulk = Some(len);
        Ok(Some(len))
    }

    fn decode_inline(&self, buf: &mut BytesMut) -> Result<Start, RespError> {
        let max = self.limits.max_inline_len;
        // Room for the longest allowed line and its "\r\n": a longer stretch without a newline can
        // only be an over-long line, so it fails now instead of being buffered further.
        let window = max.saturating_add(2);
        let searched = &buf[..buf.len().min(window)];
        let Some(newline) = searched.iter().position(|&byte| byte == b'\n') else {
            // Everything buffered belongs to the line, except a final '\r' that may start its
            // ending; fail as soon as that is already too long.
            let line_so_far = buf.len() - usize::from(buf.ends_with(b"\r"));
            return if line_so_far > max {
                Err(RespError::InlineTooLong { max })
            } else {
                Ok(Start::Incomplete)
            };
        };
        let line = &buf[..newline];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.len() > max {
            return Err(RespError::InlineTooLong { max });
        }
        let words = split_inline(line)?;
        buf.advance(newline + 1);
        Ok(if words.is_empty() {
            Start::Empty
        } else {
            Start::Inline(words)
        })
    }
}

impl Decoder for RespCodec {
    type Item = Vec<Bytes>;
    type Error = RespError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Vec<Bytes>>, RespError> {
        let decoded = self.decode_request(buf);
        if decoded.is_err() {
            // The stream cannot be framed any more; drop the half request rather than keep it.
            self.partial = None;
            self.release();
        }
        decoded
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Vec<Bytes>>, RespError> {
        match self.decode(buf)? {
            Some(words) => Ok(Some(words)),
            None if buf.is_empty() && self.partial.is_none() => Ok(None),
            None => {
                self.partial = None;
                self.release();
                Err(RespError::UnexpectedEof)
            }
        }
    }
}

impl Drop for RespCodec {
    /// A connection that goes away in the middle of a request gives its budget back.
    fn drop(&mut self) {
        self.release();
    }
}

impl Encoder<Reply> for RespCodec {
    type Error = RespError;

    fn encode(&mut self, reply: Reply, dst: &mut BytesMut) -> Result<(), RespError> {
        encode_reply(&reply, dst);
        Ok(())
    }
}

impl Encoder<&Reply> for RespCodec {
    type Error = RespError;

    fn encode(&mut self, reply: &Reply, dst: &mut BytesMut) -> Result<(), RespError> {
        encode_reply(reply, dst);
        Ok(())
    }
}

/// Splits an inline command into words like Redis's `sdssplitargs`: whitespace separates words;
/// `"..."` may hold spaces and the escapes `\xHH \n \r \t \b \a \\ \"`; `'...'` may hold spaces
/// and `\'`. A closing quote must be followed by whitespace or the end of the line.
fn split_inline(line: &[u8]) -> Result<Vec<Bytes>, RespError> {
    #[derive(Clone, Copy, PartialEq)]
    enum Quote {
        None,
        Double,
        Single,
    }

    let mut words = Vec::new();
    let mut i = 0;
    loop {
        while line
            .get(i)
            .is_some_and(|byte| byte.is_ascii_whitespace() || *byte == 0x0b)
        {
            i += 1;
        }
        if i >= line.len() {
            return Ok(words);
        }
        let mut word = Vec::new();
        let mut quote = Quote::None;
        loop {
            let Some(&byte) = line.get(i) else {
                if quote != Quote::None {
                    return Err(RespError::UnbalancedQuotes);
                }
                break;
            };
            i += 1;
            match quote {
                Quote::Double => match byte {
                    b'\\' => {
                        let escaped = line.get(i).copied();
                        let hex = line.get(i + 1..i + 3).and_then(|digits| {
                            Some(hex_value(digits[0])? * 16 + hex_value(digits[1])?)
                        });
                        match (escaped, hex) {
                            (Some(b'x'), Some(value)) => {
                                word.push(value);
                                i += 3;
                            }
                            (Some(escaped), _) => {
                                word.push(match escaped {
                                    b'n' => b'\n',
                                    b'r' => b'\r',
                                    b't' => b'\t',
                                    b'b' => 0x08,
                                    b'a' => 0x07,
                                    other => other,
                                });
                                i += 1;
                            }
                            (None, _) => word.push(byte),
                        }
                    }
                    b'"' => {
                        closing_quote_ends_word(line, i)?;
                        break;
                    }
                    other => word.push(other),
                },
                Quote::Single => match byte {
                    b'\\' if line.get(i) == Some(&b'\'') => {
                        word.push(b'\'');
                        i += 1;
                    }
                    b'\'' => {
                        closing_quote_ends_word(line, i)?;
                        break;
                    }
                    other => word.push(other),
                },
                Quote::None => match byte {
                    b' ' | b'\n' | b'\r' | b'\t' | 0 => break,
                    b'"' => quote = Quote::Double,
                    b'\'' => quote = Quote::Single,
                    other => word.push(other),
                },
            }
        }
        words.push(Bytes::from(word));
    }
}

/// A closing quote glued to more text (`"a"b`) is an error in Redis, not a concatenation.
fn closing_quote_ends_word(line: &[u8], after_quote: usize) -> Result<(), RespError> {
    match line.get(after_quote) {
        Some(byte) if !(byte.is_ascii_whitespace() || *byte == 0x0b) => {
            Err(RespError::UnbalancedQuotes)
        }
        _ => Ok(()),
    }
}

fn hex_value(digit: u8) -> Option<u8> {
    char::from(digit)
        .to_digit(16)
        .and_then(|value| u8::try_from(value).ok())
}

/// The client side of a connection: encodes requests as arrays of bulk strings, decodes
/// [`Reply`]s.
///
/// Unlike [`RespCodec`] it re-parses an incomplete reply from its start on every read, which is
/// fine for tests and tools but quadratic for huge replies arriving in many pieces.
#[derive(Debug, Default)]
pub struct RespClientCodec {
    limits: RespLimits,
}

impl RespClientCodec {
    pub fn new(limits: RespLimits) -> Self {
        RespClientCodec { limits }
    }

    /// Parses one reply at the start of `buf`: the reply and its length, or `None` if incomplete.
    fn parse_reply(&self, buf: &[u8], depth: usize) -> Result<Option<(Reply, usize)>, RespError> {
        let Some(&kind) = buf.first() else {
            return Ok(None);
        };
        match kind {
            b'+' | b'-' => {
                let Some(end) = self.find_line_end(buf)? else {
                    return Ok(None);
                };
                let text = String::from_utf8_lossy(&buf[1..end]).into_owned();
                let reply = if kind == b'+' {
                    Reply::Simple(text)
                } else {
                    Reply::Error(text)
                };
                Ok(Some((reply, end + 2)))
            }
            b':' => Ok(parse_integer_line(buf, || RespError::InvalidInteger)?
                .map(|(n, len)| (Reply::Integer(n), len))),
            b'$' => {
                let Some((len, header_len)) =
                    parse_integer_line(buf, || RespError::InvalidBulkLength)?
                else {
                    return Ok(None);
                };
                let len = match len {
                    -1 => return Ok(Some((Reply::null(), header_len))),
                    other => self.limits.bulk_len(other)?,
                };
                let data_end = header_len + len;
                let Some(terminator) = buf.get(data_end..data_end + 2) else {
                    return Ok(None);
                };
                if terminator != b"\r\n" {
                    return Err(RespError::MissingCrlf);
                }
                let data = Bytes::copy_from_slice(&buf[header_len..data_end]);
                Ok(Some((Reply::bulk(data), data_end + 2)))
            }
            b'*' => {
                let Some((count, header_len)) =
                    parse_integer_line(buf, || RespError::InvalidArrayLength)?
                else {
                    return Ok(None);
                };
                let count = match count {
                    -1 => return Ok(Some((Reply::Array(None), header_len))),
                    other => self.limits.array_len(other)?,
                };
                if count > 0 && depth >= self.limits.max_reply_depth {
                    return Err(RespError::ReplyTooDeep {
                        max: self.limits.max_reply_depth,
                    });
                }
                let mut items = Vec::with_capacity(count.min(MAX_PREALLOCATED_ELEMENTS));
                let mut offset = header_len;
                for _ in 0..count {
                    let Some((item, len)) = self.parse_reply(&buf[offset..], depth + 1)? else {
                        return Ok(None);
                    };
                    items.push(item);
                    offset += len;
                }
                Ok(Some((Reply::array(items), offset)))
            }
            other => Err(RespError::UnknownReplyType(other)),
        }
    }

    /// The index of the `\r` ending the simple line at the start of `buf`, or `None` if it has not
    /// arrived yet.
    fn find_line_end(&self, buf: &[u8]) -> Result<Option<usize>, RespError> {
        let max = self.limits.max_inline_len;
        for (i, &byte) in buf.iter().enumerate().skip(1) {
            match byte {
                b'\r' => {
                    return match buf.get(i + 1) {
                        None => Ok(None),
                        Some(b'\n') => Ok(Some(i)),
                        Some(_) => Err(RespError::MissingCrlf),
                    };
                }
                b'\n' => return Err(RespError::MissingCrlf),
                _ if i > max => return Err(RespError::InlineTooLong { max }),
                _ => {}
            }
        }
        Ok(None)
    }
}

impl Decoder for RespClientCodec {
    type Item = Reply;
    type Error = RespError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Reply>, RespError> {
        let Some((reply, len)) = self.parse_reply(buf, 0)? else {
            return Ok(None);
        };
        buf.advance(len);
        Ok(Some(reply))
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Reply>, RespError> {
        match self.decode(buf)? {
            Some(reply) => Ok(Some(reply)),
            None if buf.is_empty() => Ok(None),
            None => Err(RespError::UnexpectedEof),
        }
    }
}

impl<T: AsRef<[u8]>> Encoder<&[T]> for RespClientCodec {
    type Error = RespError;

    fn encode(&mut self, words: &[T], dst: &mut BytesMut) -> Result<(), RespError> {
        encode_request(words, dst);
        Ok(())
    }
}

impl Encoder<Vec<Bytes>> for RespClientCodec {
    type Error = RespError;

    fn encode(&mut self, words: Vec<Bytes>, dst: &mut BytesMut) -> Result<(), RespError> {
        encode_request(&words, dst);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
